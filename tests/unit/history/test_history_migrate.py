"""history.migrate: replication strings, statement splitting, the shipped migration files."""

from __future__ import annotations

import re

import pytest

from history.migrate import check_keyspace_name, load_migrations, parse_replication, split_statements
from parley.config import ConfigError


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("SimpleStrategy:1", {"class": "SimpleStrategy", "replication_factor": "1"}),
        ("SimpleStrategy:3", {"class": "SimpleStrategy", "replication_factor": "3"}),
        (
            "NetworkTopologyStrategy:dc1:3,dc2:3",
            {"class": "NetworkTopologyStrategy", "dc1": "3", "dc2": "3"},
        ),
        ("NetworkTopologyStrategy:eu-west:2", {"class": "NetworkTopologyStrategy", "eu-west": "2"}),
        ("dc1:3, dc2:1", {"class": "NetworkTopologyStrategy", "dc1": "3", "dc2": "1"}),
    ],
)
def test_replication_strings(spec: str, expected: dict[str, str]) -> None:
    assert parse_replication(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "SimpleStrategy",
        "SimpleStrategy:0",
        "SimpleStrategy:x",
        "NetworkTopologyStrategy:",
        "dc1",
        "dc1:3,dc1:2",
        "dc'1:3",
    ],
)
def test_bad_replication_strings_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_replication(spec)


def test_statements_are_split_and_comments_dropped() -> None:
    text = (
        "-- a table\nCREATE TABLE a (x int PRIMARY KEY); -- trailing\n\n"
        "CREATE TABLE b (\n  y int PRIMARY KEY -- key\n);\n"
    )
    assert split_statements(text) == [
        "CREATE TABLE a (x int PRIMARY KEY)",
        "CREATE TABLE b (\n  y int PRIMARY KEY \n)",
    ]


def test_shipped_migrations_are_ordered_idempotent_statements() -> None:
    migrations = load_migrations()
    versions = [m.version for m in migrations]
    assert versions == sorted(versions) and versions[0] == 1
    assert len(set(versions)) == len(versions)
    for migration in migrations:
        assert migration.statements
        for statement in migration.statements:
            # Re-running a half-applied migration must be harmless: creations say IF NOT EXISTS,
            # and setting a table's options (ALTER TABLE ... WITH) sets them again.
            upper = statement.upper()
            assert "IF NOT EXISTS" in upper or re.match(r"ALTER TABLE \w+ WITH ", upper), statement


@pytest.mark.parametrize("name", ["parley", "parley_test_1", "P2"])
def test_valid_keyspace_names(name: str) -> None:
    check_keyspace_name(name)


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a;DROP", "x" * 49])
def test_invalid_keyspace_names(name: str) -> None:
    with pytest.raises(ConfigError):
        check_keyspace_name(name)
