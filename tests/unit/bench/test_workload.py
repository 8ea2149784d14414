"""The simulated users' conversations and message bodies."""

from __future__ import annotations

import random

import pytest

from bench.workload import (
    KIND_DIRECT,
    KIND_GROUP,
    decode_body,
    encode_body,
    mean_recipients,
    pick_conversation,
    plan_conversations,
)


def test_every_user_has_one_direct_and_one_group() -> None:
    plan = plan_conversations(10, group_size=4)
    directs = [c for c in plan.conversations if c.kind == KIND_DIRECT]
    groups = [c for c in plan.conversations if c.kind == KIND_GROUP]
    assert [c.members for c in directs] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert [c.members for c in groups] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]
    for user in range(10):
        assert user in plan.conversations[plan.direct_of[user]].members
        assert user in plan.conversations[plan.group_of[user]].members


def test_odd_user_counts_and_single_member_remainders_are_absorbed() -> None:
    plan = plan_conversations(9, group_size=4)
    assert plan.conversations[plan.direct_of[8]].members == (8, 0)
    groups = [c.members for c in plan.conversations if c.kind == KIND_GROUP]
    assert groups == [(0, 1, 2, 3), (4, 5, 6, 7, 8)]  # no group of one


def test_without_groups_only_directs() -> None:
    plan = plan_conversations(4, group_size=0)
    assert all(c.kind == KIND_DIRECT for c in plan.conversations)
    assert plan.group_of == (-1, -1, -1, -1)
    assert pick_conversation(plan, 2, direct_share=0.0, rng=random.Random(1)) == plan.direct_of[2]


@pytest.mark.parametrize(("users", "group_size"), [(1, 0), (10, 1), (10, -2)])
def test_invalid_plans_are_refused(users: int, group_size: int) -> None:
    with pytest.raises(ValueError):
        plan_conversations(users, group_size)


def test_pick_conversation_follows_the_direct_share() -> None:
    plan = plan_conversations(100, group_size=5)
    rng = random.Random(7)
    picks = [pick_conversation(plan, 3, 0.7, rng) for _ in range(10_000)]
    direct = sum(1 for p in picks if p == plan.direct_of[3]) / len(picks)
    assert 0.67 < direct < 0.73
    assert set(picks) == {plan.direct_of[3], plan.group_of[3]}


def test_mean_recipients() -> None:
    plan = plan_conversations(100, group_size=5)
    assert mean_recipients(plan, 1.0) == pytest.approx(1.0)
    assert mean_recipients(plan, 0.0) == pytest.approx(4.0)
    assert mean_recipients(plan, 0.5) == pytest.approx(2.5)


def test_body_round_trip_pads_to_size_and_stays_utf8() -> None:
    body = encode_body(123456, 987654321012, size=64)
    assert len(body) == 64
    body.decode("utf-8")
    assert decode_body(body) == (123456, 987654321012)
    # A body shorter than its header is never truncated.
    assert decode_body(encode_body(1, 2, size=0)) == (1, 2)


def test_decode_body_rejects_foreign_text() -> None:
    with pytest.raises(ValueError):
        decode_body(b"hello there")
