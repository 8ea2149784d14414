"""Certificates for the security tests: Parley's CA (as the devstack makes it) and an impostor's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from parley.pki import EDGE_NAMES, PROBE, SERVICES, ensure_dev_pki, issue, make_ca, write_pair
from parley.tls import ClientTLS, InternalTLS, ServerTLS


@dataclass(frozen=True)
class Pki:
    """The real PKI in ``directory`` and, in ``other``, a second CA with certificates of the same names."""

    directory: Path
    other: Path

    @classmethod
    def create(cls, root: Path) -> Pki:
        real = ensure_dev_pki(root / "pki")
        other = root / "other"
        other.mkdir()
        ca = make_ca("An impostor's CA")
        write_pair(other, "ca", ca)
        write_pair(other, "edge", issue(ca, "parley-gateway", EDGE_NAMES))
        for name in (*SERVICES, PROBE):
            write_pair(other, name, issue(ca, name, [name]))
        return cls(real, other)

    def path(self, stem: str, *, other: bool = False) -> str:
        return str((self.other if other else self.directory) / stem)

    def internal(self, service: str, *, other: bool = False) -> InternalTLS:
        base = self.other if other else self.directory
        return InternalTLS(
            str(base / f"{service}.crt"), str(base / f"{service}.key"), str(self.directory / "ca.crt")
        )

    def client(self, identity: str | None, *, other_ca: bool = False) -> ClientTLS:
        """A client trusting Parley's CA, presenting ``identity``'s certificate (None: none)."""
        base = self.other if other_ca else self.directory
        if identity is None:
            return ClientTLS(str(self.directory / "ca.crt"))
        return ClientTLS(
            str(self.directory / "ca.crt"), str(base / f"{identity}.crt"), str(base / f"{identity}.key")
        )

    @property
    def edge(self) -> ServerTLS:
        return ServerTLS(str(self.directory / "edge.crt"), str(self.directory / "edge.key"))

    @property
    def ca_file(self) -> str:
        return str(self.directory / "ca.crt")

    @property
    def other_ca_file(self) -> str:
        return str(self.other / "ca.crt")
