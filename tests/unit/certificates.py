"""A throwaway self-signed certificate and key for TLS tests (the ``openssl`` command)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CertificatePair:
    cert: Path
    key: Path


def self_signed_certificate(directory: Path, name: str = "ffca") -> CertificatePair:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    openssl = shutil.which("openssl")
    assert openssl is not None, "these tests need the openssl command (Debian: openssl)"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            f"/CN={name}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            # Valid for the address the tests' listeners use, so hostnames are checked too.
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return CertificatePair(cert, key)
