"""A real mosquitto for tests: generated TLS PKI, client-certificate identities and an ACL.

Reusable by any test suite:

    pki = Pki.create(tmp_path / "pki", identities=["dock-A", "dock-B", "central"])
    broker = Broker(tmp_path / "broker", pki); broker.start(); ...; broker.restart(); broker.stop()
    settings = broker.settings("dock-A")   # an MqttSettings with TLS files for that identity

Identities are certificate common names; mosquitto uses them as user names
(`use_identity_as_username`), and the ACL below lets a dock write only under
`dock/v1/<its id>/#` and read only `dock/v1/<its id>/cmd/#`; `central` reads everything
under `dock/v1/` and writes commands.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.settings import MqttSettings

MOSQUITTO = "/usr/sbin/mosquitto"

ACL = """\
# Docks: identity (certificate CN) == dock id.
pattern write dock/v1/%u/#
pattern read dock/v1/%u/cmd/#

user central
topic read dock/v1/#
topic write dock/v1/+/cmd/#
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Pki:
    root: Path

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.pem"

    def cert(self, identity: str) -> Path:
        return self.root / f"{identity}.pem"

    def key(self, identity: str) -> Path:
        return self.root / f"{identity}.key"

    @classmethod
    def create(cls, root: Path, identities: list[str]) -> Pki:
        root.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        ca_key = _key()
        ca = (
            x509.CertificateBuilder()
            .subject_name(_name("dock-agent test CA"))
            .issuer_name(_name("dock-agent test CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        pki = cls(root)
        pki.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

        def issue(cn: str, server: bool) -> None:
            key = _key()
            b = (
                x509.CertificateBuilder()
                .subject_name(_name(cn))
                .issuer_name(ca.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            )
            if server:
                b = b.add_extension(
                    x509.SubjectAlternativeName(
                        [
                            x509.DNSName("localhost"),
                            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        ]
                    ),
                    critical=False,
                ).add_extension(
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
                )
            else:
                b = b.add_extension(
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
                )
            cert = b.sign(ca_key, hashes.SHA256())
            pki.cert(cn).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            _write_key(key, pki.key(cn))

        issue("server", server=True)
        for ident in identities:
            issue(ident, server=False)
        return pki


class Broker:
    """A mosquitto process on a fixed port, restartable on the same port."""

    def __init__(self, workdir: Path, pki: Pki, port: int | None = None) -> None:
        self.workdir = workdir
        self.pki = pki
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.acl_file = workdir / "acl"
        self.acl_file.write_text(ACL)
        self.conf_file = workdir / "mosquitto.conf"
        self.log_file = workdir / "mosquitto.log"
        self.conf_file.write_text(
            "\n".join(
                [
                    "per_listener_settings false",
                    "user root",  # tests run as root: keep access to the test files
                    "persistence true",  # consumer sessions survive restart()
                    f"persistence_location {workdir}/",
                    "autosave_interval 3600",  # saved on SIGTERM (restart)
                    f"log_dest file {self.log_file}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "log_type information",
                    "max_queued_messages 0",
                    "max_inflight_messages 100",
                    "allow_anonymous false",
                    f"acl_file {self.acl_file}",
                    f"listener {self.port} 127.0.0.1",
                    f"cafile {pki.ca_file}",
                    f"certfile {pki.cert('server')}",
                    f"keyfile {pki.key('server')}",
                    "require_certificate true",
                    "use_identity_as_username true",
                    "",
                ]
            )
        )

    def start(self) -> None:
        assert self.proc is None, "already running"
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60  # a loaded machine starts processes slowly
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self, *, kill: bool = False) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if kill:
            os.kill(proc.pid, signal.SIGKILL)
        else:
            proc.terminate()
        try:
            # A graceful stop writes the persistence file (the consumer sessions' queued
            # events); killing it early on a loaded machine would lose them, which is a
            # different test (stop(kill=True)).
            proc.wait(10 if kill else 120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def settings(self, identity: str, **overrides: object) -> MqttSettings:
        base = MqttSettings(
            host="127.0.0.1",
            port=self.port,
            tls=True,
            ca_file=self.pki.ca_file,
            cert_file=self.pki.cert(identity),
            key_file=self.pki.key(identity),
            client_id=identity,
            keepalive_s=10,
            backoff_min_s=0.1,
            backoff_max_s=1.0,
        )
        return replace(base, **overrides)  # type: ignore[arg-type]
