"""TLS credentials from the PEM files named in `TlsSettings`: for the gRPC server, for channels to it,
and the matching options of the HTTP door (uvicorn)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import grpc

from tutorforge.core.errors import FailedPrecondition


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise FailedPrecondition(f"tls.{what} {path}: cannot be read ({error.strerror})") from error


def server_enabled(tls: Any) -> bool:
    return bool(tls.cert_file and tls.key_file)


def client_enabled(tls: Any) -> bool:
    return bool(tls.ca_file)


def check(tls: Any) -> None:
    """Half a configuration is a mistake, not plaintext: say which setting is missing."""
    if bool(tls.cert_file) != bool(tls.key_file):
        raise FailedPrecondition("tls.cert_file and tls.key_file go together: set both or neither")
    if tls.require_client_cert and not (server_enabled(tls) and tls.ca_file):
        raise FailedPrecondition("tls.require_client_cert needs tls.cert_file, tls.key_file and tls.ca_file")


def server_credentials(tls: Any) -> grpc.ServerCredentials | None:
    check(tls)
    if not server_enabled(tls):
        return None
    return grpc.ssl_server_credentials(
        [(_read(tls.key_file, "key_file"), _read(tls.cert_file, "cert_file"))],
        root_certificates=_read(tls.ca_file, "ca_file") if tls.require_client_cert else None,
        require_client_auth=bool(tls.require_client_cert),
    )


def channel_credentials(tls: Any) -> grpc.ChannelCredentials | None:
    """Credentials of a channel to a TLS server, or None for plaintext (no `ca_file`)."""
    if not client_enabled(tls):
        return None
    check(tls)
    mine = server_enabled(tls)
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file, "ca_file"),
        private_key=_read(tls.key_file, "key_file") if mine else None,
        certificate_chain=_read(tls.cert_file, "cert_file") if mine else None,
    )


def uvicorn_options(tls: Any) -> dict[str, Any]:
    check(tls)
    if not server_enabled(tls):
        return {}
    options: dict[str, Any] = {"ssl_certfile": str(tls.cert_file), "ssl_keyfile": str(tls.key_file)}
    if tls.require_client_cert:
        options |= {"ssl_ca_certs": str(tls.ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options
