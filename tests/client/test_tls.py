"""The SDK over TLS and mTLS with a token, sync and asyncio, against a real server (the reliability tests'
test PKI: a CA, a server certificate for 127.0.0.1, a client certificate)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr
from tutorforge.client import NotFound, Tutorforge, Unauthenticated, Unavailable
from tutorforge.client.aio import AsyncTutorforge
from tutorforge.core.settings import TlsSettings

from tests.reliability.test_access import pki  # noqa: F401 - the shared test PKI fixture


def test_sync_and_async_clients_over_tls_with_a_token(serve, pki) -> None:  # noqa: F811
    running, _ = serve("training", tls=TlsSettings(cert_file=pki["server_cert"], key_file=pki["server_key"]),
                       server__api_token=SecretStr("t0ken"))
    trusted = TlsSettings(ca_file=pki["ca_cert"])
    with Tutorforge(running.address, token="t0ken", tls=trusted) as tf:
        assert list(tf.training.jobs()) == []
    with Tutorforge(running.address, tls=trusted) as anonymous, pytest.raises(Unauthenticated):
        list(anonymous.training.jobs())
    # Plaintext to a TLS port never connects: UNAVAILABLE after the retries.
    with Tutorforge(running.address, token="t0ken") as plaintext, pytest.raises(Unavailable):
        list(plaintext.training.jobs())

    async def get_missing() -> None:
        async with AsyncTutorforge(running.address, token="t0ken", tls=trusted) as atf:
            with pytest.raises(NotFound):
                await atf.training.get("no-such-job")

    asyncio.run(get_missing())


def test_async_client_with_a_client_certificate(serve, pki) -> None:  # noqa: F811
    mutual = TlsSettings(cert_file=pki["server_cert"], key_file=pki["server_key"], ca_file=pki["ca_cert"], require_client_cert=True)
    running, _ = serve("training", tls=mutual)
    client = TlsSettings(ca_file=pki["ca_cert"], cert_file=pki["client_cert"], key_file=pki["client_key"])

    async def get_missing() -> None:
        async with AsyncTutorforge(running.address, tls=client) as atf:
            with pytest.raises(NotFound):
                await atf.training.get("no-such-job")

    asyncio.run(get_missing())
