"""The client's standard-library development tokens are the JWTs the server verifies."""

from __future__ import annotations

import jwt
import pytest

from parley.auth import AuthConfig, Authenticator
from parley.errors import Unauthenticated
from parley_client.devtoken import DEV_SECRET, mint_dev_token, token_subject


def test_the_server_accepts_a_minted_token() -> None:
    token = mint_dev_token("alice", ttl_seconds=60)
    assert Authenticator(AuthConfig(development=True)).user_from_token(token) == "alice"
    claims = jwt.decode(token, DEV_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 60


def test_an_expired_or_foreign_token_is_refused() -> None:
    auth = Authenticator(AuthConfig(development=True, leeway_seconds=0))
    with pytest.raises(Unauthenticated):
        auth.user_from_token(mint_dev_token("alice", ttl_seconds=-10))
    with pytest.raises(Unauthenticated):
        auth.user_from_token(mint_dev_token("alice", secret="another secret"))


def test_token_subject_reads_sub_without_verifying() -> None:
    assert token_subject(mint_dev_token("bob", secret="whatever")) == "bob"
    assert token_subject(jwt.encode({"sub": "carol"}, "k" * 32, algorithm="HS256")) == "carol"
    assert token_subject(jwt.encode({"user": "x"}, "k" * 32, algorithm="HS256")) is None
    for garbage in ("", "a.b", "a.!!!.c", "x.eyJzdWIiOjF9.y"):
        assert token_subject(garbage) is None
