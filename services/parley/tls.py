"""TLS for the public edge and mutual TLS between the services.

- :class:`ServerTLS`: a server's certificate and key files (and, for mutual
  TLS, the CA its clients' certificates must chain to). The files are
  re-read when they change, for new connections only: gRPC through dynamic
  server credentials (a fetcher gRPC calls at each handshake), the WebSocket
  bridge through an SSL context swapped in during the handshake. A renewed
  certificate (cert-manager rewrites the Secret's files) takes effect
  without a restart; open connections keep the one they started with.
- :class:`ClientTLS`: what a client trusts (a CA file, or the system roots)
  and, for mutual TLS, its own certificate.
- :class:`ServiceIdentityGuard`: a server interceptor that admits an
  internal RPC only from a peer whose verified certificate names a service
  allowed to call this one. Health checking and reflection are exempt from
  the identity check (any certificate of the CA, e.g. the ``probe`` one, may
  ask); probes that cannot speak TLS at all (Kubernetes' gRPC probes) use a
  plaintext port that serves nothing else (``PARLEY_<SERVICE>_HEALTH_PORT``).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from parley.config import ConfigError, Env

log = logging.getLogger(__name__)

# Reachable without a service identity (probes, grpcurl list).
EXEMPT_SERVICE_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

# Which service may call which: the real call graph, nothing more.
ALLOWED_CALLERS: dict[str, frozenset[str]] = {
    "router": frozenset({"gateway"}),
    "presence": frozenset({"gateway"}),
    "history": frozenset({"gateway", "router"}),
}


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None


def _mtimes(paths: Iterable[str]) -> tuple[float, ...]:
    out = []
    for path in paths:
        try:
            out.append(os.stat(path).st_mtime)
        except OSError:
            out.append(-1.0)
    return tuple(out)


@dataclass(frozen=True)
class ServerTLS:
    cert_file: str
    key_file: str
    # Set for mutual TLS: clients must present a certificate of this CA (which
    # services may call what is the ServiceIdentityGuard's decision).
    client_ca_file: str = ""

    def files(self) -> list[str]:
        return [self.cert_file, self.key_file] + ([self.client_ca_file] if self.client_ca_file else [])

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Server credentials that pick up changed files at the next handshake."""
        reloader = _GrpcReloader(self)
        return grpc.dynamic_ssl_server_credentials(
            reloader.initial,
            reloader.fetch,
            # Mutual TLS: no handshake without a client certificate of the CA.
            # Probes that have none use the plaintext health port.
            require_client_authentication=bool(self.client_ca_file),
        )

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load TLS certificate {self.cert_file} / key {self.key_file}: {exc}"
            ) from None
        if self.client_ca_file:
            context.load_verify_locations(self.client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def reloading_ssl_context(self) -> ssl.SSLContext:
        """An SSL context for asyncio servers that switches to re-read files at each new handshake."""
        return _SSLReloader(self).context


class _GrpcReloader:
    def __init__(self, tls: ServerTLS) -> None:
        self._tls = tls
        self._stamp = _mtimes(tls.files())
        self.initial = self._config()

    def _config(self) -> Any:
        tls = self._tls
        return grpc.ssl_server_certificate_configuration(
            [(_read(tls.key_file), _read(tls.cert_file))],
            root_certificates=_read(tls.client_ca_file) if tls.client_ca_file else None,
        )

    def fetch(self) -> Any:
        # Called by gRPC at each new handshake; None keeps the current configuration.
        stamp = _mtimes(self._tls.files())
        if stamp == self._stamp:
            return None
        try:
            config = self._config()
            # Validate the pair before handing it to gRPC (a half-written rotation).
            self._tls.ssl_context()
        except ConfigError as exc:
            log.warning("TLS files changed but cannot be loaded (keeping the previous ones): %s", exc)
            return None
        self._stamp = stamp
        log.info("TLS certificate reloaded from %s", self._tls.cert_file)
        return config


class _SSLReloader:
    def __init__(self, tls: ServerTLS) -> None:
        self._tls = tls
        self._stamp = _mtimes(tls.files())
        self._current = self._build()
        # The context asyncio holds; each handshake is moved to the newest one.
        self.context = self._build()

    def _build(self) -> ssl.SSLContext:
        context = self._tls.ssl_context()
        context.sni_callback = self._on_hello
        return context

    def _on_hello(
        self, sock: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        # OpenSSL calls this for every ClientHello, with or without SNI.
        stamp = _mtimes(self._tls.files())
        if stamp != self._stamp:
            try:
                self._current = self._build()
                log.info("TLS certificate reloaded from %s", self._tls.cert_file)
            except ConfigError as exc:
                log.warning("TLS files changed but cannot be loaded (keeping the previous ones): %s", exc)
            self._stamp = stamp
        sock.context = self._current


@dataclass(frozen=True)
class ClientTLS:
    # Empty: the system's trusted roots.
    ca_file: str = ""
    # Both set for mutual TLS (a service calling another).
    cert_file: str = ""
    key_file: str = ""

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file) if self.ca_file else None,
            private_key=_read(self.key_file) if self.key_file else None,
            certificate_chain=_read(self.cert_file) if self.cert_file else None,
        )


@dataclass(frozen=True)
class InternalTLS:
    """A service's identity for internal calls: its certificate (server and client) and the internal CA."""

    cert_file: str
    key_file: str
    ca_file: str

    @property
    def server(self) -> ServerTLS:
        return ServerTLS(self.cert_file, self.key_file, client_ca_file=self.ca_file)

    @property
    def client(self) -> ClientTLS:
        return ClientTLS(self.ca_file, self.cert_file, self.key_file)

    @classmethod
    def from_env(cls, env: Env) -> InternalTLS | None:
        """Mutual TLS from PARLEY_INTERNAL_TLS_*; None only with PARLEY_INTERNAL_INSECURE=true."""
        cert = env.str("PARLEY_INTERNAL_TLS_CERT_FILE", "")
        key = env.str("PARLEY_INTERNAL_TLS_KEY_FILE", "")
        ca = env.str("PARLEY_INTERNAL_CA_FILE", "")
        insecure = env.bool("PARLEY_INTERNAL_INSECURE", False)
        if insecure:
            if cert or key or ca:
                raise ConfigError("PARLEY_INTERNAL_INSECURE=true contradicts PARLEY_INTERNAL_TLS_* settings")
            return None
        missing = [
            name
            for name, value in (
                ("PARLEY_INTERNAL_TLS_CERT_FILE", cert),
                ("PARLEY_INTERNAL_TLS_KEY_FILE", key),
                ("PARLEY_INTERNAL_CA_FILE", ca),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                f"internal calls need mutual TLS: set {', '.join(missing)} "
                "(or PARLEY_INTERNAL_INSECURE=true to run them in plaintext without authentication)"
            )
        # The files are read when the server starts (a Secret may be mounted later than config is parsed).
        return cls(cert, key, ca)


def edge_tls_from_env(env: Env) -> ServerTLS | None:
    """The gateway's public TLS from PARLEY_TLS_CERT_FILE/KEY_FILE; None only with PARLEY_PLAINTEXT=true."""
    cert = env.str("PARLEY_TLS_CERT_FILE", "")
    key = env.str("PARLEY_TLS_KEY_FILE", "")
    if env.bool("PARLEY_PLAINTEXT", False):
        if cert or key:
            raise ConfigError("PARLEY_PLAINTEXT=true contradicts PARLEY_TLS_CERT_FILE/PARLEY_TLS_KEY_FILE")
        return None
    if not cert or not key:
        raise ConfigError(
            "the gateway serves TLS: set PARLEY_TLS_CERT_FILE and PARLEY_TLS_KEY_FILE "
            "(or PARLEY_PLAINTEXT=true for plaintext, e.g. behind a TLS-terminating proxy)"
        )
    return ServerTLS(cert, key)


def peer_service(context: Any) -> str | None:
    """The service name in the peer's verified client certificate (its common name), if any."""
    auth = context.auth_context()
    if auth.get("transport_security_type") != [b"ssl"]:
        return None
    names = auth.get("x509_common_name") or []
    if len(names) != 1:
        return None
    name: bytes = names[0]
    return name.decode("utf-8", "replace")


def exempt(method: str) -> bool:
    return method.startswith(EXEMPT_SERVICE_PREFIXES)


Check = Callable[[Any], Awaitable[None]]


def guarded(handler: Any, check: Check) -> Any:
    """The handler with ``check(context)`` awaited before it runs (check aborts to refuse)."""
    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            await check(context)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(request: Any, context: Any) -> Any:
            await check(context)
            async for item in inner_us(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_stream is not None:
        inner_ss = handler.stream_stream

        async def stream_stream(request_iterator: Any, context: Any) -> Any:
            await check(context)
            result = inner_ss(request_iterator, context)
            if hasattr(result, "__aiter__"):
                async for item in result:
                    yield item
            else:
                await result

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        async def stream_unary(request_iterator: Any, context: Any) -> Any:
            await check(context)
            return await inner_su(request_iterator, context)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary, handler.request_deserializer, handler.response_serializer
        )
    return handler


class ServiceIdentityGuard(grpc.aio.ServerInterceptor):
    """Admits an RPC only from a service in ``allowed`` (by its verified certificate); probes are exempt."""

    def __init__(self, service: str, allowed: frozenset[str]) -> None:
        self._service = service
        self._allowed = allowed

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler: Any = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or exempt(method):
            return handler
        service, allowed = self._service, self._allowed

        async def check(context: Any) -> None:
            caller = peer_service(context)
            if caller is None:
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED, f"{service}: a service certificate is required"
                )
            if caller not in allowed:
                log.warning("%s: refused %s from service %r", service, method, caller)
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED, f"{service}: {caller!r} may not call {method}"
                )

        return guarded(handler, check)


class TLSOnly(grpc.aio.ServerInterceptor):
    """For a server with a plaintext probe port besides its TLS port: only health/reflection without TLS."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler: Any = await continuation(handler_call_details)
        if handler is None or exempt(handler_call_details.method):
            return handler

        async def check(context: Any) -> None:
            if context.auth_context().get("transport_security_type") != [b"ssl"]:
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED, "this port serves health checks only; connect with TLS"
                )

        return guarded(handler, check)
