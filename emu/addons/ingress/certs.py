"""TLS material for the ingress controller: the certificates of kubernetes.io/tls Secrets, self-signed ones made on
request, and the controller's default "fake" certificate, all through the real `openssl` tool."""
from __future__ import annotations

import base64
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

from emu.errors import EmuError

# What ingress-nginx serves when no Secret matches (internal/net/ssl: GetFakeSSLCert).
FAKE_ORG = "Acme Co"
FAKE_CN = "Kubernetes Ingress Controller Fake Certificate"
FAKE_SAN = "ingress.local"


class CertError(EmuError, RuntimeError):
    """openssl failed or a certificate could not be read; the message has openssl's own words."""


@dataclass(frozen=True, slots=True)
class CertInfo:
    subject: str
    issuer: str
    names: tuple[str, ...]  # subjectAltName DNS names, or the CN when there are none
    not_after: str


def _openssl(args: list[str], stdin: bytes | None = None) -> str:
    try:
        r = subprocess.run(["openssl", *args], input=stdin, capture_output=True, timeout=60)
    except FileNotFoundError:
        raise CertError("openssl is not installed (run tools/setup)") from None
    if r.returncode != 0:
        raise CertError(f"openssl {args[0]}: {r.stderr.decode(errors='replace').strip().splitlines()[-1:]}")
    return r.stdout.decode()


def self_signed(hosts: list[str], org: str | None = None, days: int = 365) -> tuple[str, str]:
    """A self-signed certificate (RSA 2048, SHA-256) for `hosts`: CN the first, every host a DNS SAN."""
    if not hosts:
        raise CertError("a self-signed certificate needs at least one host name")
    subj = (f"/O={org}" if org else "") + f"/CN={hosts[0]}"
    san = ",".join(f"DNS:{h}" for h in hosts)
    with tempfile.TemporaryDirectory(prefix="emu-cert-") as d:
        crt, key = os.path.join(d, "tls.crt"), os.path.join(d, "tls.key")
        _openssl(["req", "-x509", "-newkey", "rsa:2048", "-sha256", "-nodes", "-days", str(days), "-subj", subj,
                  "-addext", f"subjectAltName={san}", "-keyout", key, "-out", crt])
        with open(crt) as f1, open(key) as f2:
            return f1.read(), f2.read()


def fake_certificate() -> tuple[str, str]:
    with tempfile.TemporaryDirectory(prefix="emu-cert-") as d:
        crt, key = os.path.join(d, "tls.crt"), os.path.join(d, "tls.key")
        _openssl(["req", "-x509", "-newkey", "rsa:2048", "-sha256", "-nodes", "-days", "365",
                  "-subj", f"/O={FAKE_ORG}/CN={FAKE_CN}", "-addext", f"subjectAltName=DNS:{FAKE_SAN}",
                  "-keyout", key, "-out", crt])
        with open(crt) as f1, open(key) as f2:
            return f1.read(), f2.read()


SAN_DNS = re.compile(r"DNS:([^,\s]+)")


def info(cert_pem: str) -> CertInfo:
    out = _openssl(["x509", "-noout", "-subject", "-issuer", "-enddate", "-ext", "subjectAltName",
                    "-nameopt", "RFC2253"], cert_pem.encode())
    fields = {}
    for line in out.splitlines():
        if "=" in line and not line.startswith(" "):
            k, v = line.split("=", 1)
            fields[k.strip()] = v.strip()
    names = tuple(SAN_DNS.findall(out))
    if not names:
        cn = re.search(r"CN=([^,]+)", fields.get("subject", ""))
        names = (cn.group(1),) if cn else ()
    return CertInfo(fields.get("subject", ""), fields.get("issuer", ""), names, fields.get("notAfter", ""))


def key_matches(cert_pem: str, key_pem: str) -> bool:
    """The private key belongs to the certificate (their public keys are equal)."""
    try:
        a = _openssl(["x509", "-noout", "-pubkey"], cert_pem.encode())
        b = _openssl(["pkey", "-pubout"], key_pem.encode())
    except CertError:
        return False
    return a.strip() == b.strip()


def secret_manifest(namespace: str, name: str, cert_pem: str, key_pem: str) -> dict[str, object]:
    """The Secret `kubectl create secret tls` makes."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"tls.crt": base64.b64encode(cert_pem.encode()).decode(),
                     "tls.key": base64.b64encode(key_pem.encode()).decode()}}
