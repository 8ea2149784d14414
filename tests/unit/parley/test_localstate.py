"""parley.localstate: the local stack's logins, found under the state folder."""

from __future__ import annotations

from pathlib import Path

from parley.localstate import LocalCredentials, state_dir
from parley.redisclient import url_without_credentials


def local(tmp_path: Path, *, redis: bool = False, cassandra: bool = False) -> LocalCredentials:
    if redis:
        passwords = tmp_path / "redis" / "passwords"
        passwords.mkdir(parents=True)
        for user in ("parley-admin", "router"):
            (passwords / user).write_text(f"pw of {user}/:@\n")
    if cassandra:
        passwords = tmp_path / "cassandra" / "passwords"
        passwords.mkdir(parents=True)
        for role in ("parley", "parley_admin"):
            (passwords / role).write_text(f"{role}-secret\n")
        (tmp_path / "cassandra" / "auth-enabled").touch()
    return LocalCredentials(tmp_path)


def test_the_state_folder_is_parley_state_dir_else_the_checkouts(tmp_path: Path) -> None:
    assert state_dir({"PARLEY_STATE_DIR": str(tmp_path)}) == tmp_path
    assert state_dir({}).name == ".state"


def test_a_redis_url_gets_the_admin_login_only_when_redis_has_acl_users(tmp_path: Path) -> None:
    url = "redis://127.0.0.1:6380/0"
    assert LocalCredentials(tmp_path).redis_url(url) == url
    with_acl = local(tmp_path, redis=True)
    assert with_acl.redis_acl
    # The password is quoted: any character survives the URL.
    assert with_acl.redis_url(url) == "redis://parley-admin:pw%20of%20parley-admin%2F%3A%40@127.0.0.1:6380/0"
    # A URL that names a user already is the caller's choice.
    chosen = "redis://someone:pw@127.0.0.1:6380/0"
    assert with_acl.redis_url(chosen) == chosen


def test_cassandra_login_only_while_the_node_runs_with_authentication(tmp_path: Path) -> None:
    assert LocalCredentials(tmp_path).cassandra_login() == ("", "")
    creds = local(tmp_path, cassandra=True)
    assert creds.cassandra_login() == ("parley", "parley-secret")
    assert creds.cassandra_login("parley_admin") == ("parley_admin", "parley_admin-secret")
    (tmp_path / "cassandra" / "auth-enabled").unlink()  # PARLEY_CASSANDRA_AUTH=false: passwords kept
    assert creds.cassandra_login() == ("", "")


def test_service_env_names_password_files_and_leaves_chosen_logins_alone(tmp_path: Path) -> None:
    creds = local(tmp_path, redis=True, cassandra=True)
    assert creds.service_env("router", {}) == {
        "PARLEY_REDIS_USERNAME": "router",
        "PARLEY_REDIS_PASSWORD_FILE": str(tmp_path / "redis" / "passwords" / "router"),
        "PARLEY_CASSANDRA_USERNAME": "parley",
        "PARLEY_CASSANDRA_PASSWORD_FILE": str(tmp_path / "cassandra" / "passwords" / "parley"),
    }
    assert creds.service_env("router", {"PARLEY_REDIS_USERNAME": "", "PARLEY_CASSANDRA_USERNAME": "x"}) == {}
    assert LocalCredentials(tmp_path / "none").service_env("router", {}) == {}


def test_a_configured_redis_user_wins_over_the_urls() -> None:
    # redis-py lets a URL's login win over keyword arguments: connect() strips it first.
    assert url_without_credentials("redis://a:b@h:1/0") == "redis://h:1/0"
    assert url_without_credentials("rediss://:p%40@h:1/2?x=1") == "rediss://h:1/2?x=1"
    assert url_without_credentials("redis://h:1/0") == "redis://h:1/0"
