"""The conformance scenarios (clients/conformance/scenarios) and the plan a driver runs.

A scenario names users, conversations and clients by keys; the plan binds
them to fresh user ids (with tokens) and real conversation ids, so every
scenario starts from empty conversations (seq 1) and no two runs meet.
clients/conformance/README.md is the format's reference; load_scenarios
checks every file against it, so a typo fails here and not in each driver.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parley.auth import DEV_SECRET, mint_dev_token
from parley_client import ParleyClient

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFORMANCE_DIR = REPO_ROOT / "clients" / "conformance"
SCENARIO_DIR = CONFORMANCE_DIR / "scenarios"
DRIVERS_FILE = CONFORMANCE_DIR / "drivers.json"

# op -> (required fields, optional fields); "op" and "client" are implied.
OPS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "connect": (frozenset(), frozenset({"timeout_s"})),
    "disconnect": (frozenset(), frozenset()),
    "kill_connection": (frozenset(), frozenset()),
    "send": (
        frozenset({"expect"}),
        frozenset(
            {
                "conversation",
                "conversation_id",
                "text",
                "body_size",
                "body_hex",
                "client_message_id",
                "client_message_id_size",
                "via",
                "timeout_s",
            }
        ),
    ),
    "send_many": (frozenset({"conversation", "count", "text"}), frozenset({"expect", "timeout_s"})),
    "expect_messages": (
        frozenset({"conversation"}),
        frozenset({"messages", "count", "first_seq", "text", "sender", "timeout_s"}),
    ),
    "resync": (frozenset({"conversation", "after_seq"}), frozenset()),
    "mark_read": (frozenset({"conversation", "seq"}), frozenset()),
    "expect_receipt": (frozenset({"conversation", "user", "kind", "seq"}), frozenset({"timeout_s"})),
}
# Steps a driver may skip (reporting them): an SDK without a unary transport.
SKIPPABLE = {("send", "unary")}
TOKEN_TTL_SECONDS = 3600


class ScenarioError(ValueError):
    pass


@dataclass(frozen=True)
class Endpoints:
    gateway: str
    ws_url: str
    ca_file: str


def skippable(step: Mapping[str, Any]) -> bool:
    return (step["op"], step.get("via", "session")) in SKIPPABLE


def _check_step(name: str, index: int, step: Mapping[str, Any], scenario: Mapping[str, Any]) -> None:
    where = f"{name} step {index}"
    op = step.get("op")
    if op not in OPS:
        raise ScenarioError(f"{where}: unknown op {op!r} (known: {sorted(OPS)})")
    required, optional = OPS[op]
    fields = set(step) - {"op", "client"}
    if "client" not in step or step["client"] not in scenario["users"]:
        raise ScenarioError(f"{where}: client must be one of the users {scenario['users']}")
    if missing := required - fields:
        raise ScenarioError(f"{where}: {op} needs {sorted(missing)}")
    if unknown := fields - required - optional:
        raise ScenarioError(f"{where}: {op} does not take {sorted(unknown)}")
    conversation = step.get("conversation")
    if conversation is not None and conversation not in scenario["conversations"]:
        raise ScenarioError(f"{where}: unknown conversation {conversation!r}")
    if op == "send" and (conversation is None) == ("conversation_id" not in step):
        raise ScenarioError(f"{where}: send takes exactly one of conversation, conversation_id")
    if op == "send" and sum(k in step for k in ("text", "body_size", "body_hex")) != 1:
        raise ScenarioError(f"{where}: send takes exactly one of text, body_size, body_hex")
    if step.get("via", "session") not in ("session", "unary"):
        raise ScenarioError(f"{where}: via is session or unary")
    if op == "expect_messages" and ("messages" in step) == ("count" in step):
        raise ScenarioError(f"{where}: expect_messages takes messages or count (+ first_seq, text, sender)")
    for user in [step.get("user"), step.get("sender"), *(m.get("sender") for m in step.get("messages", []))]:
        if user is not None and user not in scenario["users"]:
            raise ScenarioError(f"{where}: unknown user {user!r}")
    if op == "expect_receipt" and step["kind"] not in ("DELIVERED", "READ"):
        raise ScenarioError(f"{where}: kind is DELIVERED or READ")


def check_scenario(path: Path, scenario: Mapping[str, Any]) -> None:
    name = scenario.get("name")
    if name != path.stem:
        raise ScenarioError(f"{path.name}: name must be {path.stem!r}, not {name!r}")
    for key in ("summary", "users", "conversations", "steps"):
        if key not in scenario:
            raise ScenarioError(f"{name}: missing {key!r}")
    for key, conversation in scenario["conversations"].items():
        people = [conversation.get("creator"), *conversation.get("members", [])]
        if any(user not in scenario["users"] for user in people):
            raise ScenarioError(f"{name}: conversation {key!r} names an unknown user")
        if conversation.get("kind") not in ("group", "direct"):
            raise ScenarioError(f"{name}: conversation {key!r}: kind is group or direct")
        if conversation["kind"] == "direct" and len(conversation["members"]) != 1:
            raise ScenarioError(
                f"{name}: direct conversation {key!r} has exactly one member besides its creator"
            )
    for index, step in enumerate(scenario["steps"]):
        _check_step(name, index, step, scenario)


def load_scenarios(only: Sequence[str] = ()) -> list[dict[str, Any]]:
    scenarios = []
    for path in sorted(SCENARIO_DIR.glob("*.json")):
        scenario = json.loads(path.read_text())
        check_scenario(path, scenario)
        if not only or scenario["name"] in only:
            scenarios.append(scenario)
    if only and {s["name"] for s in scenarios} != set(only):
        raise ScenarioError(f"no such scenarios: {sorted(set(only) - {s['name'] for s in scenarios})}")
    return scenarios


async def bind(scenario: Mapping[str, Any], endpoints: Endpoints, run_id: str) -> dict[str, Any]:
    """One scenario of the plan: fresh users with tokens, its conversations created."""
    prefix = f"cf{run_id}-{scenario['name']}"
    users = {
        key: {
            "user_id": f"{prefix}-{key}",
            "token": mint_dev_token(f"{prefix}-{key}", ttl_seconds=TOKEN_TTL_SECONDS),
        }
        for key in scenario["users"]
    }
    conversations: dict[str, str] = {}
    for key, spec in scenario["conversations"].items():
        creator = users[spec["creator"]]
        members = [users[m]["user_id"] for m in spec["members"]]
        async with ParleyClient(
            endpoints.gateway, token=creator["token"], ca_file=endpoints.ca_file
        ) as client:
            if spec["kind"] == "direct":
                conversation = await client.create_direct(members[0])
            else:
                conversation = await client.create_group(f"{scenario['name']} {key}", members)
        conversations[key] = conversation.id
    return {
        **scenario,
        "users": users,
        "clients": {key: {"user": key, "device_id": f"{prefix}-{key}-device"} for key in scenario["users"]},
        "conversations": conversations,
    }


async def make_plan(endpoints: Endpoints, only: Sequence[str] = ()) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:6]
    scenarios = [await bind(s, endpoints, run_id) for s in load_scenarios(only)]
    return {
        "gateway": endpoints.gateway,
        "ws_url": endpoints.ws_url,
        "ca_file": endpoints.ca_file,
        "jwt_secret": DEV_SECRET,
        "scenarios": scenarios,
    }


def check_results(plan: Mapping[str, Any], lines: Sequence[str]) -> list[str]:
    """What is wrong with a driver's results (empty: every scenario passed)."""
    problems: list[str] = []
    results: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            result = json.loads(line)
            results[result["scenario"]] = result
        except (ValueError, KeyError, TypeError):
            problems.append(f"results line {number} is not a result: {line[:200]!r}")
    for scenario in plan["scenarios"]:
        name = scenario["name"]
        result = results.pop(name, None)
        if result is None:
            problems.append(f"{name}: no result")
            continue
        if result.get("status") != "pass":
            step = result.get("step")
            where = (
                f" at step {step} ({json.dumps(scenario['steps'][step])})" if isinstance(step, int) else ""
            )
            problems.append(f"{name}: {result.get('status')}{where}: {result.get('detail', '')}")
        for index in result.get("skipped_steps", []):
            steps = scenario["steps"]
            if not (isinstance(index, int) and 0 <= index < len(steps) and skippable(steps[index])):
                problems.append(f"{name}: step {index} may not be skipped")
    problems.extend(f"{name}: not in the plan" for name in results)
    return problems
