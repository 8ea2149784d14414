"""Presence service settings, from the environment (documented defaults)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from parley.config import ConfigError, Env, RedisConfig, ServerConfig, TelemetryConfig
from parley.tls import InternalTLS


@dataclass(frozen=True)
class PresenceConfig:
    server: ServerConfig
    redis: RedisConfig
    telemetry: TelemetryConfig
    # Lease of a session registered without one (PARLEY_PRESENCE_LEASE_S). A
    # gateway that dies takes at most this long (plus a reaper tick) to have
    # its users shown offline; gateways renew every ~lease/3.
    default_lease_s: float = 30.0
    # Longest lease a caller may ask for (PARLEY_PRESENCE_MAX_LEASE_S); longer requests are capped.
    max_lease_s: float = 30.0
    # How long a user whose last connection broke still counts as online
    # (PARLEY_PRESENCE_GRACE_S): a reconnect within it is not broadcast. 0 disables.
    offline_grace_s: float = 2.0
    # Pause between reaper passes when nothing is due (PARLEY_PRESENCE_REAP_INTERVAL_S).
    reap_interval_s: float = 0.5
    # Expired leases (and lingering users) handled per reaper script call
    # (PARLEY_PRESENCE_REAP_BATCH): bounds how long one call holds Redis.
    reap_batch: int = 200
    # Approximate length the change stream is trimmed to (PARLEY_PRESENCE_CHANGES_MAXLEN).
    changes_maxlen: int = 100_000
    # Mutual TLS for internal calls (server, and client where it calls others); None: plaintext.
    internal_tls: InternalTLS | None = None

    @property
    def default_lease_ms(self) -> int:
        return int(self.default_lease_s * 1000)

    @property
    def max_lease_ms(self) -> int:
        return int(self.max_lease_s * 1000)

    @property
    def offline_grace_ms(self) -> int:
        return int(self.offline_grace_s * 1000)


def load_config(environ: Mapping[str, str] | None = None) -> PresenceConfig:
    env = Env(environ)
    default_lease_s = env.float("PARLEY_PRESENCE_LEASE_S", PresenceConfig.default_lease_s, minimum=0.1)
    max_lease_s = env.float("PARLEY_PRESENCE_MAX_LEASE_S", max(PresenceConfig.max_lease_s, default_lease_s))
    if max_lease_s < default_lease_s:
        raise ConfigError(
            f"PARLEY_PRESENCE_MAX_LEASE_S={max_lease_s} is below PARLEY_PRESENCE_LEASE_S={default_lease_s}"
        )
    return PresenceConfig(
        server=ServerConfig.from_env(env, "PARLEY_PRESENCE", 50053),
        redis=RedisConfig.from_env(env),
        telemetry=TelemetryConfig.from_env(env, "parley-presence"),
        default_lease_s=default_lease_s,
        max_lease_s=max_lease_s,
        offline_grace_s=env.float("PARLEY_PRESENCE_GRACE_S", PresenceConfig.offline_grace_s, minimum=0.0),
        reap_interval_s=env.float(
            "PARLEY_PRESENCE_REAP_INTERVAL_S", PresenceConfig.reap_interval_s, minimum=0.01
        ),
        reap_batch=env.int("PARLEY_PRESENCE_REAP_BATCH", PresenceConfig.reap_batch, minimum=1, maximum=5000),
        changes_maxlen=env.int(
            "PARLEY_PRESENCE_CHANGES_MAXLEN", PresenceConfig.changes_maxlen, minimum=100, maximum=10_000_000
        ),
        internal_tls=InternalTLS.from_env(env),
    )
