"""Which keys must share a Redis Cluster slot, and the check that they do.

Every atomic write is one Lua script, and a script may only touch keys of one
slot in a cluster (parley.keys puts the partition tag ``{pN}`` or
``{presence}`` in each). Redis hashes the first ``{...}`` of a key, so a
prefix (``PARLEY_REDIS_PREFIX``) with braces of its own, or a change to a
layout in keys.py, could silently spread a script's keys over slots: the
script would then fail with CROSSSLOT on every call. :func:`check_single_slot`
computes the slot of every key of every script (with sample ids that contain
the characters ids may hold) and fails at start instead, naming the script
and the keys. parley.redisclient runs it before connecting to a cluster; the
unit tests run it over the default layout.
"""

from __future__ import annotations

from redis.crc import key_slot

from parley.config import ConfigError
from parley.keys import Keys

# Ids as hostile as limits.py allows: ':' in user ids, braces in client message ids.
_SAMPLE_CONVERSATIONS = ("d_0123456789abcdef01234567", "g_fedcba9876543210fedcba98")
_SAMPLE_USER = "user:with:colons"
_SAMPLE_CLIENT_MESSAGE_ID = "{cmid}:x}{"
_SAMPLE_GATEWAY = "gw-{1}"


def script_key_groups(keys: Keys) -> dict[str, list[str]]:
    """Per Lua script (and sample conversation): every key it touches, declared or built in Lua."""
    groups: dict[str, list[str]] = {}
    for cid in _SAMPLE_CONVERSATIONS:
        sender, cmid = _SAMPLE_USER, _SAMPLE_CLIENT_MESSAGE_ID
        groups[f"parley/lua/append.lua ({cid})"] = [
            keys.seq(cid),
            keys.dedupe(cid, sender, cmid),
            keys.messages(cid),
            keys.log_of(cid),
            keys.members(cid),
            keys.meta(cid),
            keys.dedupe_legacy(cid, sender, cmid),
        ]
        groups[f"router/lua/create.lua ({cid})"] = [keys.meta(cid), keys.members(cid), keys.log_of(cid)]
        groups[f"router/lua/cursor.lua ({cid})"] = [
            keys.cursors(cid),
            keys.members(cid),
            keys.seq(cid),
            keys.log_of(cid),
        ]
        groups[f"router/lua/members.lua ({cid})"] = [keys.members(cid), keys.log_of(cid)]
    base = keys.presence_base
    groups["presence/lua/*.lua"] = [
        keys.presence_index(),
        keys.presence_leases(),
        keys.presence_lingering(),
        keys.presence_changes(),
        # Built inside the scripts from presence_base (lib.lua).
        keys.presence_sessions(_SAMPLE_USER),
        keys.presence_state(_SAMPLE_USER),
        keys.presence_stats(),
        f"{base}gwsessions:{_SAMPLE_GATEWAY}",
    ]
    return groups


def slot_of(key: str) -> int:
    return int(key_slot(key.encode()))


def check_single_slot(keys: Keys) -> None:
    """Raises ConfigError when a script's keys would fall in more than one cluster slot.

    A prefix with braces is refused outright: even when its tag keeps each script in one
    slot, it would put every key of the deployment in that one slot (one shard).
    """
    if "{" in keys.prefix or "}" in keys.prefix:
        raise ConfigError(
            f"Redis Cluster: PARLEY_REDIS_PREFIX={keys.prefix!r} must not contain '{{' or '}}': Redis "
            "hashes the first {...} of a key, so the prefix would replace the keys' own hash tags"
        )
    for script, group in script_key_groups(keys).items():
        slots = {slot_of(key): key for key in group}
        if len(slots) > 1:
            shown = ", ".join(f"{key} -> slot {slot}" for slot, key in sorted(slots.items()))
            raise ConfigError(
                f"Redis Cluster: the keys of {script} fall in {len(slots)} slots ({shown}); one script "
                f"must touch one slot. PARLEY_REDIS_PREFIX={keys.prefix!r} must not contain '{{' or '}}' "
                "(Redis hashes the first {...} of a key), and every layout in parley/keys.py must carry "
                "its hash tag"
            )
