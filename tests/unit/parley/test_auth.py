"""parley.auth: bearer JWTs, the development secret and its guard."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from parley.auth import DEV_SECRET, MAX_USER_ID_LEN, AuthConfig, Authenticator, mint_dev_token, valid_user_id
from parley.config import ConfigError, Env
from parley.errors import Unauthenticated

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def hs256(claims: dict[str, object], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def authenticator(**overrides: object) -> Authenticator:
    fields: dict[str, object] = {"key": SECRET, "leeway_seconds": 0.0, **overrides}
    return Authenticator(AuthConfig(**fields))  # type: ignore[arg-type]


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("x-other", "1"), ("authorization", f"Bearer {token}"))


# --- configuration ---------------------------------------------------------


@pytest.mark.parametrize("environ", [{}, {"PARLEY_ENV": "production"}, {"PARLEY_ENV": "staging"}])
def test_dev_secret_is_refused_outside_development(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="development"):
        AuthConfig.from_env(Env(environ))


def test_dev_secret_is_refused_even_when_set_explicitly_in_production() -> None:
    with pytest.raises(ConfigError):
        AuthConfig.from_env(Env({"PARLEY_JWT_KEY": DEV_SECRET, "PARLEY_ENV": "production"}))


def test_dev_secret_is_accepted_in_development() -> None:
    config = AuthConfig.from_env(Env({"PARLEY_ENV": "development"}))
    assert config.key == DEV_SECRET
    assert config.development is True
    assert config.algorithm == "HS256"


def test_a_real_secret_is_accepted_in_production() -> None:
    config = AuthConfig.from_env(Env({"PARLEY_JWT_KEY": SECRET, "PARLEY_JWT_LEEWAY_SECONDS": "5"}))
    assert (config.key, config.development, config.leeway_seconds) == (SECRET, False, 5.0)


def test_rs256_needs_a_key() -> None:
    with pytest.raises(ConfigError, match="PARLEY_JWT_KEY"):
        AuthConfig.from_env(Env({"PARLEY_JWT_ALGORITHM": "RS256"}))


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ConfigError, match="PARLEY_JWT_ALGORITHM"):
        AuthConfig.from_env(Env({"PARLEY_JWT_ALGORITHM": "none", "PARLEY_JWT_KEY": SECRET}))


def test_key_file_is_read(tmp_path: Path) -> None:
    key_file = tmp_path / "jwt.key"
    key_file.write_text(SECRET)
    assert AuthConfig.from_env(Env({"PARLEY_JWT_KEY_FILE": str(key_file)})).key == SECRET


def test_missing_key_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PARLEY_JWT_KEY_FILE"):
        AuthConfig.from_env(Env({"PARLEY_JWT_KEY_FILE": str(tmp_path / "absent")}))


# --- tokens ----------------------------------------------------------------


def test_valid_token_yields_its_subject() -> None:
    token = hs256({"sub": "alice", "exp": int(time.time()) + 60})
    assert authenticator().user_from_metadata(bearer(token)) == "alice"


def test_bytes_metadata_and_lowercase_scheme_are_accepted() -> None:
    token = hs256({"sub": "bob", "exp": int(time.time()) + 60})
    assert authenticator().user_from_metadata((("authorization", f"bearer {token}".encode()),)) == "bob"


def test_dev_token_round_trips_with_the_dev_secret() -> None:
    auth = Authenticator(AuthConfig(key=DEV_SECRET, development=True))
    assert auth.user_from_token(mint_dev_token("carol")) == "carol"


def test_expired_token_is_rejected() -> None:
    token = hs256({"sub": "alice", "exp": int(time.time()) - 120})
    with pytest.raises(Unauthenticated, match="expired"):
        authenticator().user_from_token(token)


def test_leeway_tolerates_small_clock_skew() -> None:
    token = hs256({"sub": "alice", "exp": int(time.time()) - 5})
    assert authenticator(leeway_seconds=30.0).user_from_token(token) == "alice"
    with pytest.raises(Unauthenticated):
        authenticator(leeway_seconds=0.0).user_from_token(token)


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30"])
def test_malformed_token_is_rejected(token: str) -> None:
    with pytest.raises(Unauthenticated):
        authenticator().user_from_token(token)


def test_token_signed_with_another_secret_is_rejected() -> None:
    token = hs256({"sub": "alice", "exp": int(time.time()) + 60}, secret="another-secret-another-secret-123")
    with pytest.raises(Unauthenticated, match="invalid token"):
        authenticator().user_from_token(token)


def test_dev_token_is_rejected_by_a_production_key() -> None:
    with pytest.raises(Unauthenticated):
        authenticator().user_from_token(mint_dev_token("mallory"))


@pytest.mark.parametrize("claims", [{"sub": "alice"}, {"exp": 2**31}], ids=["no-exp", "no-sub"])
def test_required_claims(claims: dict[str, object]) -> None:
    with pytest.raises(Unauthenticated):
        authenticator().user_from_token(hs256(claims))


@pytest.mark.parametrize("sub", ["has space", "a,b", "x|y", "{tag}", "x" * (MAX_USER_ID_LEN + 1)])
def test_subject_must_be_a_valid_user_id(sub: str) -> None:
    token = hs256({"sub": sub, "exp": int(time.time()) + 60})
    with pytest.raises(Unauthenticated, match="user id"):
        authenticator().user_from_token(token)


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        (),
        (("x-other", "1"),),
        (("authorization", "Basic dXNlcjpwYXNz"),),
        (("authorization", "Bearer "),),
        (("authorization", "tokenwithoutscheme"),),
    ],
    ids=["none", "empty", "absent", "basic", "blank-bearer", "no-scheme"],
)
def test_missing_or_malformed_authorization_metadata(metadata: tuple[tuple[str, str], ...] | None) -> None:
    with pytest.raises(Unauthenticated):
        authenticator().user_from_metadata(metadata)


def test_issuer_and_audience_are_checked_when_configured() -> None:
    auth = authenticator(issuer="parley", audience="chat")
    exp = int(time.time()) + 60
    assert auth.user_from_token(hs256({"sub": "a", "exp": exp, "iss": "parley", "aud": "chat"})) == "a"
    with pytest.raises(Unauthenticated):
        auth.user_from_token(hs256({"sub": "a", "exp": exp, "iss": "other", "aud": "chat"}))
    with pytest.raises(Unauthenticated):
        auth.user_from_token(hs256({"sub": "a", "exp": exp, "iss": "parley"}))


def test_rs256_tokens_verify_with_the_public_key_and_hs256_confusion_fails() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    auth = authenticator(algorithm="RS256", key=public_pem)
    claims = {"sub": "dave", "exp": int(time.time()) + 60}
    assert auth.user_from_token(jwt.encode(claims, private, algorithm="RS256")) == "dave"
    # Algorithm confusion: an HS256 token whose HMAC secret is the public key
    # (which attackers have) must not pass as the user.
    with pytest.raises(Unauthenticated):
        auth.user_from_token(forge_hs256(claims, public_pem.encode()))


def forge_hs256(claims: dict[str, object], secret: bytes) -> str:
    # By hand: PyJWT itself refuses to use a PEM key as an HMAC secret.
    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(claims).encode())
    signature = b64(hmac.new(secret, signing_input, hashlib.sha256).digest())
    return (signing_input + b"." + signature).decode()


@pytest.mark.parametrize(
    ("user_id", "ok"), [("alice", True), ("u-1_2.3@x", True), ("", False), ("a\nb", False)]
)
def test_valid_user_id(user_id: str, ok: bool) -> None:
    assert valid_user_id(user_id) is ok
