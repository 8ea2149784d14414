"""presence.servicer: request validation and the lease a registration gets."""

from __future__ import annotations

import pytest

from parley.config import RedisConfig, ServerConfig, TelemetryConfig
from parley.errors import InvalidArgument
from parley.internal.v1 import presence_pb2
from presence.config import PresenceConfig
from presence.servicer import check_id, check_ids, check_session, lease_ms

CONFIG = PresenceConfig(
    server=ServerConfig(host="127.0.0.1", port=0),
    redis=RedisConfig(),
    telemetry=TelemetryConfig(service_name="t"),
    default_lease_s=20.0,
    max_lease_s=30.0,
)


def register_request(lease_ms_value: int | None) -> presence_pb2.RegisterSessionRequest:
    request = presence_pb2.RegisterSessionRequest(
        session=presence_pb2.Session(user_id="u", session_id="s", gateway_id="g")
    )
    if lease_ms_value is not None:
        request.lease.FromMilliseconds(lease_ms_value)
    return request


@pytest.mark.parametrize(
    ("requested", "granted"),
    [(None, 20_000), (0, 20_000), (1_500, 1_500), (30_000, 30_000), (3_600_000, 30_000)],
)
def test_lease_default_and_cap(requested: int | None, granted: int) -> None:
    assert lease_ms(register_request(requested), CONFIG) == granted


def test_negative_lease_is_invalid() -> None:
    with pytest.raises(InvalidArgument):
        lease_ms(register_request(-1000), CONFIG)


@pytest.mark.parametrize("value", ["", "x" * 257, "a\x1fb", "tab\there", "del\x7f"])
def test_bad_ids(value: str) -> None:
    with pytest.raises(InvalidArgument):
        check_id("user_id", value)


def test_good_ids() -> None:
    for value in ["alice", "x" * 256, "user@example.com", "ünïcødé", "a|b:c"]:
        check_id("user_id", value)
    check_id("device_id", "", required=False)


def test_id_lists_are_bounded() -> None:
    assert check_ids("user_ids", iter(["a", "b"])) == ["a", "b"]
    with pytest.raises(InvalidArgument):
        check_ids("user_ids", ["a"] * 10_001)
    with pytest.raises(InvalidArgument):
        check_ids("user_ids", ["a", ""])


def test_session_needs_user_session_and_gateway_but_not_device() -> None:
    check_session(presence_pb2.Session(user_id="u", session_id="s", gateway_id="g"))
    for missing in ("user_id", "session_id", "gateway_id"):
        fields = {"user_id": "u", "session_id": "s", "gateway_id": "g", missing: ""}
        with pytest.raises(InvalidArgument, match=missing):
            check_session(presence_pb2.Session(**fields))
