"""The server's TLS context from ``--tls-cert`` and ``--tls-key`` (PEM files).

TLS 1.2 is the floor, with the standard library's default server ciphers. A missing or unreadable
file, a key that does not match the certificate, or an encrypted key (the server cannot prompt for
a passphrase) stops the start with one message naming the file.
"""

from __future__ import annotations

import ssl
from pathlib import Path


class TLSConfigError(ValueError):
    pass


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    for label, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not path.is_file():
            raise TLSConfigError(f"{label} {path}: no such file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2

    def no_passphrase() -> str:
        raise TLSConfigError(f"--tls-key {key}: the key is encrypted; give the server an unencrypted key file")

    try:
        context.load_cert_chain(str(cert), str(key), password=no_passphrase)
    except ssl.SSLError as exc:
        raise TLSConfigError(
            f"--tls-cert {cert} / --tls-key {key}: cannot use them ({exc.reason or exc}); "
            "both must be PEM and the key must belong to the certificate"
        ) from None
    except OSError as exc:
        raise TLSConfigError(f"--tls-cert {cert} / --tls-key {key}: cannot read them ({exc.strerror})") from None
    return context


def grpc_credentials(cert: Path, key: Path):  # -> grpc.ServerCredentials (grpc imported only for gRPC)
    """The same certificate and key for the gRPC port; checked with ``server_context`` first, so a bad
    pair fails with the same message on both protocols."""
    import grpc

    server_context(cert, key)
    return grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
