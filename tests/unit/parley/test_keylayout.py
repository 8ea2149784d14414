"""Every Lua script's keys in one Redis Cluster slot, and a clear error when not."""

from __future__ import annotations

import pytest

from parley.config import ConfigError
from parley.keylayout import check_single_slot, script_key_groups, slot_of
from parley.keys import Keys


def test_every_script_layout_is_in_one_slot() -> None:
    keys = Keys(prefix="parley", partitions=16)
    check_single_slot(keys)
    groups = script_key_groups(keys)
    assert any("append.lua" in name for name in groups) and "presence/lua/*.lua" in groups
    # Different partitions land in different slots: the logs spread over the cluster.
    assert len({slot_of(log) for log in keys.logs()}) == 16
    assert slot_of("parley:{p3}:log") == slot_of("{p3}")


def test_a_layout_that_lost_its_hash_tag_is_named() -> None:
    class Untagged(Keys):
        def members(self, conversation_id: str) -> str:
            return f"{self.prefix}:members:{conversation_id}"  # lost its {pN} tag

    with pytest.raises(ConfigError, match=r"append\.lua") as failed:
        check_single_slot(Untagged())
    assert ":members:" in str(failed.value)


@pytest.mark.parametrize("prefix", ["{}x", "a{b}", "x{", "p}"])
def test_a_prefix_with_braces_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigError, match="PARLEY_REDIS_PREFIX"):
        check_single_slot(Keys(prefix=prefix))
