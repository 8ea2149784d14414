"""What the simulated users do (pure): who talks in which conversations, and message bodies.

Each worker owns a contiguous range of users and every conversation of its
users, so all members of a conversation live in one worker process and loss
and latency are accounted there without cross-process bookkeeping (the
servers cannot tell: streams are spread over the same connections either way).

Every user is in one direct conversation (users paired up) and, when
``group_size`` > 0, in one group of ``group_size`` consecutive users.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

KIND_DIRECT = "direct"
KIND_GROUP = "group"


@dataclass(frozen=True)
class PlannedConversation:
    kind: str
    members: tuple[int, ...]  # worker-local user indices; the creator is members[0]


@dataclass(frozen=True)
class Plan:
    users: int
    conversations: tuple[PlannedConversation, ...]
    direct_of: tuple[int, ...]  # user -> index of its direct conversation
    group_of: tuple[int, ...]  # user -> index of its group (-1: none)


def plan_conversations(users: int, group_size: int) -> Plan:
    if users < 2:
        raise ValueError("at least two users are needed")
    if group_size == 1 or group_size < 0:
        raise ValueError("group_size is 0 (no groups) or at least 2")
    conversations: list[PlannedConversation] = []
    direct_of = [-1] * users
    for a in range(0, users - 1, 2):
        direct_of[a] = direct_of[a + 1] = len(conversations)
        conversations.append(PlannedConversation(KIND_DIRECT, (a, a + 1)))
    if users % 2:
        # The odd one out talks to user 0 (who then has two direct conversations).
        direct_of[users - 1] = len(conversations)
        conversations.append(PlannedConversation(KIND_DIRECT, (users - 1, 0)))
    group_of = [-1] * users
    if group_size:
        starts = list(range(0, users, group_size))
        if len(starts) > 1 and users - starts[-1] < 2:
            starts.pop()  # a one-member remainder joins the previous group
        for n, start in enumerate(starts):
            end = starts[n + 1] if n + 1 < len(starts) else users
            index = len(conversations)
            conversations.append(PlannedConversation(KIND_GROUP, tuple(range(start, end))))
            for user in range(start, end):
                group_of[user] = index
    return Plan(users, tuple(conversations), tuple(direct_of), tuple(group_of))


def pick_conversation(plan: Plan, user: int, direct_share: float, rng: random.Random) -> int:
    """The conversation a user's next message goes to: its direct one with probability direct_share."""
    group = plan.group_of[user]
    if group < 0 or rng.random() < direct_share:
        return plan.direct_of[user]
    return group


def mean_recipients(plan: Plan, direct_share: float) -> float:
    """Expected recipients per message when senders are picked uniformly."""
    total = 0.0
    for user in range(plan.users):
        direct = len(plan.conversations[plan.direct_of[user]].members) - 1
        group = plan.group_of[user]
        if group < 0:
            total += direct
        else:
            total += direct_share * direct + (1 - direct_share) * (len(plan.conversations[group].members) - 1)
    return total / plan.users


# --- message bodies ---------------------------------------------------------------------------
# "<message id> <intended send time, CLOCK_MONOTONIC ns> " then padding: valid UTF-8, parsed
# at every recipient without JSON. CLOCK_MONOTONIC is system-wide on Linux, so the time is
# comparable in any process of the machine.


def encode_body(msg_id: int, intended_ns: int, size: int) -> bytes:
    head = f"{msg_id} {intended_ns} ".encode()
    return head + b"x" * max(0, size - len(head))


def decode_body(body: bytes) -> tuple[int, int]:
    msg_id, intended_ns, _ = body.split(b" ", 2)
    return int(msg_id), int(intended_ns)
