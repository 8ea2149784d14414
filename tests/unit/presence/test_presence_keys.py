"""parley.keys (presence part): one hash tag for every presence key."""

from __future__ import annotations

from parley.keys import Keys


def test_every_presence_key_shares_one_hash_tag() -> None:
    keys = Keys("t")
    # One Cluster slot: the scripts update index, leases, users and stream atomically.
    for key in (
        keys.presence_sessions("u"),
        keys.presence_state("u"),
        keys.presence_index(),
        keys.presence_leases(),
        keys.presence_lingering(),
        keys.presence_changes(),
    ):
        assert key.startswith("t:{presence}:")
        assert key.count("{") == 1


def test_user_keys_are_distinct() -> None:
    keys = Keys("t")
    assert keys.presence_sessions("u") != keys.presence_state("u")
    assert keys.presence_state("u") != keys.presence_state("v")
    assert keys.presence_sessions("u") == keys.presence_base + "sessions:u"
    assert keys.presence_state("u") == keys.presence_base + "state:u"
