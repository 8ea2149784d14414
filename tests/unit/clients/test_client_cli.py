"""The `parley` CLI: argument parsing, identity, state paths and error reporting."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import jwt
import pytest

from parley.auth import DEV_SECRET
from parley_client import cli
from parley_client.state import cursor_file, default_state_dir, device_id, path_component


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(argv)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "argv",
    [
        ["--as", "alice", "--gateway", "h:1", "send", "--to", "bob", "hi"],
        ["send", "--as", "alice", "--gateway", "h:1", "--to", "bob", "hi"],
        ["--gateway", "h:1", "send", "--to", "bob", "--as", "alice", "hi"],
    ],
)
def test_connection_options_before_or_after_the_command(argv: list[str]) -> None:
    args = parse(*argv)
    assert (args.as_user, args.gateway, args.to, args.text) == ("alice", "h:1", "bob", ["hi"])


def test_option_after_the_command_is_not_reset_by_a_missing_one() -> None:
    args = parse("--as", "alice", "listen")
    assert args.as_user == "alice"
    args = parse("listen", "--as", "bob")
    assert args.as_user == "bob"


def test_members_are_comma_separated_and_repeatable() -> None:
    args = parse("group", "create", "team", "--members", "bob, carol", "--members", "dave", "--as", "alice")
    assert args.members == ["bob", "carol", "dave"]
    with pytest.raises(SystemExit) as info:
        parse("group", "add", "--as", "a", "--conversation", "g1", "--members", ",")
    assert info.value.code == 2


def test_send_needs_exactly_one_target() -> None:
    for argv in (["send", "hi"], ["send", "--to", "b", "--conversation", "c", "hi"]):
        with pytest.raises(SystemExit) as info:
            parse(*argv)
        assert info.value.code == 2


def test_history_options() -> None:
    args = parse("history", "--with", "alice", "--before", "40", "--limit", "10", "--all", "--json")
    assert (args.with_user, args.before, args.limit, args.all, args.json) == ("alice", 40, 10, True, True)
    with pytest.raises(SystemExit):
        parse("history", "--with", "alice", "--before", "4", "--after", "2")
    with pytest.raises(SystemExit):
        parse("history", "--with", "alice", "--limit", "0")


def test_identity_from_as_user_mints_a_dev_token() -> None:
    me = cli.resolve_identity(parse("--as", "alice", "conversations"), {})
    assert me.user_id == "alice"
    assert jwt.decode(me.token, DEV_SECRET, algorithms=["HS256"])["sub"] == "alice"
    # A long-running command asks for a fresh token per call instead of reusing one that expires.
    assert me.minter is not None
    assert jwt.decode(me.minter(), DEV_SECRET, algorithms=["HS256"])["sub"] == "alice"


def test_identity_uses_the_configured_hs256_key() -> None:
    me = cli.resolve_identity(parse("--as", "alice", "conversations"), {"PARLEY_JWT_KEY": "k" * 32})
    assert jwt.decode(me.token, "k" * 32, algorithms=["HS256"])["sub"] == "alice"


def test_identity_from_token_or_environment() -> None:
    token = jwt.encode({"sub": "carol", "exp": 2**31}, "other-secret-of-32-bytes-or-more!", algorithm="HS256")
    me = cli.resolve_identity(parse("--token", token, "conversations"), {})
    assert (me.token, me.user_id) == (token, "carol")
    me = cli.resolve_identity(parse("conversations"), {"PARLEY_TOKEN": token})
    assert me.user_id == "carol"
    assert cli.resolve_identity(parse("--token", "opaque", "conversations"), {}).user_id is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["conversations"], "who are you"),
        (["--as", "a", "--token", "t", "conversations"], "mutually exclusive"),
        (["--as", "bad user", "conversations"], "invalid user id"),
    ],
)
def test_identity_errors(argv: list[str], message: str) -> None:
    with pytest.raises(cli.UsageError, match=message):
        cli.resolve_identity(parse(*argv), {})


def test_gateway_from_option_environment_or_default() -> None:
    assert cli.resolve_gateway(parse("--gateway", "x:1", "conversations"), {"PARLEY_GATEWAY": "y:2"}) == "x:1"
    assert cli.resolve_gateway(parse("conversations"), {"PARLEY_GATEWAY": "y:2"}) == "y:2"
    assert cli.resolve_gateway(parse("conversations"), {}) == "127.0.0.1:50051"


def test_token_command_prints_a_valid_dev_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["token", "alice", "--ttl", "60"]) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, DEV_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 60


def test_usage_error_exits_2_without_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PARLEY_TOKEN", raising=False)
    assert cli.main(["conversations"]) == 2
    err = capsys.readouterr().err
    assert "parley: error: who are you" in err and "Traceback" not in err


def test_unreachable_gateway_exits_1_with_status_name(capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    code = cli.main(
        ["send", "--as", "alice", "--gateway", f"127.0.0.1:{port}", "--timeout", "2", "--to", "bob", "x"]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.startswith("parley: UNAVAILABLE: ")
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_state_dir_default_and_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_state_dir({}) == Path.home() / ".parley"
    assert default_state_dir({"PARLEY_CLI_STATE_DIR": str(tmp_path)}) == tmp_path


def test_device_id_is_created_once_per_state_dir(tmp_path: Path) -> None:
    first = device_id(tmp_path / "state")
    assert first.startswith("cli-")
    assert device_id(tmp_path / "state") == first
    assert device_id(tmp_path / "other") != first


def test_cursor_file_layout_is_safe_for_any_user_id(tmp_path: Path) -> None:
    assert cursor_file(tmp_path, "bob", "cli-1") == tmp_path / "bob" / "cli-1.json"
    for hostile in ("../etc", "a/b", ".", ".."):
        component = path_component(hostile)
        assert "/" not in component and not component.startswith(".")
        assert cursor_file(tmp_path, hostile, "d").parent.parent == tmp_path


def test_listen_state_uses_options_then_environment(tmp_path: Path) -> None:
    args = parse("listen", "--state-dir", str(tmp_path), "--device-id", "laptop")
    assert cli.listen_state(args, "bob", {}) == ("laptop", tmp_path / "bob" / "laptop.json")
    args = parse("listen")
    device, path = cli.listen_state(args, "bob", {"PARLEY_CLI_STATE_DIR": str(tmp_path)})
    assert path == tmp_path / "bob" / f"{device}.json"
    assert (tmp_path / "device_id").read_text().strip() == device
