"""Access over real loopback gRPC and HTTP: scoped tokens, refusing an empty token at start, TLS and
mTLS with certificates made here (cryptography), and one audit line per mutating call."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import re
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr
from tutorforge.client import TrainingClient
from tutorforge.core.access import METHODS, Scope
from tutorforge.core.client import open_channel
from tutorforge.core.errors import FailedPrecondition
from tutorforge.core.server import start_server
from tutorforge.core.settings import TlsSettings
from tutorforge.v1 import jobs_pb2, retrieval_pb2, retrieval_pb2_grpc, training_pb2_grpc

from tests.conftest import REPO, make_settings

TOKENS = {"chat": "chat-token-1234", "author": "author-token-1234", "admin": "admin-token-1234"}


def _scoped(**changes: object) -> dict[str, object]:
    return {"server__tokens": {scope: SecretStr(value) for scope, value in TOKENS.items()}, **changes}


def _code(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_every_rpc_of_the_protos_has_a_scope():
    declared = set()
    for proto in (REPO / "protos" / "tutorforge" / "v1").glob("*.proto"):
        text = proto.read_text()
        for service, body in re.findall(r"service (\w+) \{(.*?)\n\}", text, re.DOTALL):
            declared |= {f"/tutorforge.v1.{service}/{rpc}" for rpc in re.findall(r"rpc (\w+)\(", body)}
    assert declared and declared == set(METHODS)
    # Deletes and adapter changes are admin-only; chat reaches only chat, generation, search, adapters list.
    assert {m for m, (s, _) in METHODS.items() if s == Scope.ADMIN} >= {m for m in METHODS if "/Delete" in m}
    assert sorted(m.rsplit("/", 1)[1] for m, (s, _) in METHODS.items() if s == Scope.CHAT) == [
        "Chat", "ChatStream", "Generate", "GenerateStream", "ListAdapters", "Search"]


def test_scoped_tokens_on_grpc_and_the_audit_line_of_each_mutating_call(serve, caplog):
    running, _ = serve("retrieval", "training", **_scoped())
    caplog.set_level(logging.INFO, logger="tutorforge.audit")

    def stubs(token: str | None):
        channel = open_channel(running.address, token)
        return retrieval_pb2_grpc.RetrievalServiceStub(channel), training_pb2_grpc.TrainingServiceStub(channel)

    search = retrieval_pb2.SearchRequest(query="why does a ball keep rolling", limit=1)
    delete = retrieval_pb2.DeleteDocumentRequest(document_id="doc-nobody")
    expected = {
        # token: (Search, ListDocuments, ListJobs, DeleteDocument)
        None: ("UNAUTHENTICATED",) * 4,
        "wrong-token": ("UNAUTHENTICATED",) * 4,
        "chat": ("OK", "PERMISSION_DENIED", "PERMISSION_DENIED", "PERMISSION_DENIED"),
        "author": ("PERMISSION_DENIED", "OK", "OK", "PERMISSION_DENIED"),
        "admin": ("OK", "OK", "OK", "NOT_FOUND"),  # past auth: the document does not exist
    }
    for name, codes in expected.items():
        retrieval, training = stubs(TOKENS.get(name, name))
        got = (
            _code(lambda r=retrieval: r.Search(search, timeout=60)),
            _code(lambda r=retrieval: r.ListDocuments(retrieval_pb2.ListDocumentsRequest(), timeout=10)),
            _code(lambda t=training: t.ListJobs(jobs_pb2.ListJobsRequest(), timeout=10)),
            _code(lambda r=retrieval: r.DeleteDocument(delete, timeout=10)),
        )
        assert tuple(c.name for c in got) == codes, name
    retrieval, _ = stubs(TOKENS["chat"])
    with pytest.raises(grpc.RpcError) as refused:
        retrieval.DeleteDocument(delete, timeout=10)
    assert "'chat'" in refused.value.details() and "'admin' token" in refused.value.details()

    audits = [r.fields for r in caplog.records if r.name == "tutorforge.audit"]
    # Only the mutating call (DeleteDocument) is audited, once per attempt; reads leave no audit line.
    assert [(a["who"], a["method"].rsplit("/", 1)[1], a["resource"], a["result"]) for a in audits] == [
        ("unauthenticated", "DeleteDocument", "document_id=doc-nobody", "UNAUTHENTICATED"),
        ("unauthenticated", "DeleteDocument", "document_id=doc-nobody", "UNAUTHENTICATED"),
        ("chat", "DeleteDocument", "document_id=doc-nobody", "PERMISSION_DENIED"),
        ("author", "DeleteDocument", "document_id=doc-nobody", "PERMISSION_DENIED"),
        ("admin", "DeleteDocument", "document_id=doc-nobody", "NOT_FOUND"),
        ("chat", "DeleteDocument", "document_id=doc-nobody", "PERMISSION_DENIED"),
    ]
    assert all(a["peer"].startswith("ipv4:127.0.0.1") for a in audits)


def test_an_empty_token_refuses_to_start_unless_insecure(tmp_path):
    for changes in ({"server__api_token": SecretStr("")}, {"server__tokens": {"chat": SecretStr(" ")}}):
        with pytest.raises(FailedPrecondition, match="set but empty.*--insecure"):
            start_server(make_settings(tmp_path, **changes), ["training"], port=0)
    running = start_server(make_settings(tmp_path, server__api_token=SecretStr(""), server__insecure=True), ["training"], port=0)
    try:
        stub = training_pb2_grpc.TrainingServiceStub(open_channel(running.address))
        assert list(stub.ListJobs(jobs_pb2.ListJobsRequest(), timeout=10).jobs) == []  # auth off, on purpose
    finally:
        running.stop(grace=1)


def test_the_cli_refuses_an_empty_token_and_says_how_to_fix_it(tmp_path):
    env = {**os.environ, "TUTORFORGE_SERVER__API_TOKEN": "", "TUTORFORGE_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "tutorforge", "serve", "training", "--port", "0", "--store", str(tmp_path / "s")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode != 0
    assert "TUTORFORGE_SERVER__API_TOKEN is set but empty" in result.stderr and "--insecure" in result.stderr


# --- TLS ---------------------------------------------------------------------------------------------


def _certificate(subject: str, issuer_key, issuer_name, key, *, ca: bool = False, client: bool = False):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        # A server's certificate is also its client certificate when it calls the other services (mTLS).
        usages = [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
        if not client:
            usages.append(x509.oid.ExtendedKeyUsageOID.SERVER_AUTH)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA, a server certificate for localhost/127.0.0.1, a client certificate, and a second, foreign CA."""
    folder = tmp_path_factory.mktemp("pki")
    files: dict[str, Path] = {}

    def save(name: str, cert, key) -> None:
        files[f"{name}_cert"] = folder / f"{name}.crt"
        files[f"{name}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{name}_key"] = folder / f"{name}.key"
        files[f"{name}_key"].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    for ca_name in ("ca", "other_ca"):
        key = ec.generate_private_key(ec.SECP256R1())
        save(ca_name, _certificate(f"tutorforge test {ca_name}", key, None, key, ca=True), key)
    ca_key = serialization.load_pem_private_key(files["ca_key"].read_bytes(), None)
    ca_name = x509.load_pem_x509_certificate(files["ca_cert"].read_bytes()).subject
    for name, client in (("server", False), ("client", True)):
        key = ec.generate_private_key(ec.SECP256R1())
        save(name, _certificate(name, ca_key, ca_name, key, client=client), key)
    return files


def _list_jobs(address: str, tls: TlsSettings | None, token: str | None = None) -> grpc.StatusCode:
    stub = training_pb2_grpc.TrainingServiceStub(open_channel(address, token, tls=tls))
    return _code(lambda: stub.ListJobs(jobs_pb2.ListJobsRequest(), timeout=10))


def test_grpc_over_tls_and_mtls(serve, pki):
    server_tls = TlsSettings(cert_file=pki["server_cert"], key_file=pki["server_key"])
    running, _ = serve("training", tls=server_tls, server__api_token=SecretStr("t0ken"))
    trusted = TlsSettings(ca_file=pki["ca_cert"])
    assert _list_jobs(running.address, trusted, "t0ken") == grpc.StatusCode.OK
    assert _list_jobs(running.address, trusted, "wrong") == grpc.StatusCode.UNAUTHENTICATED
    assert _list_jobs(running.address, None, "t0ken") == grpc.StatusCode.UNAVAILABLE  # plaintext to a TLS port
    assert _list_jobs(running.address, TlsSettings(ca_file=pki["other_ca_cert"]), "t0ken") == grpc.StatusCode.UNAVAILABLE

    mutual = TlsSettings(cert_file=pki["server_cert"], key_file=pki["server_key"], ca_file=pki["ca_cert"],
                         require_client_cert=True)
    running, _ = serve("training", tls=mutual)
    client = TlsSettings(ca_file=pki["ca_cert"], cert_file=pki["client_cert"], key_file=pki["client_key"])
    assert _list_jobs(running.address, client) == grpc.StatusCode.OK
    assert _list_jobs(running.address, trusted) == grpc.StatusCode.UNAVAILABLE  # no client certificate
    # The server's own connections to its services (Runtime.connection) use the same settings and get through.
    assert list(TrainingClient(running.runtime.connection("training")).jobs()) == []


def test_half_a_tls_configuration_refuses_to_start(tmp_path, pki):
    settings = make_settings(tmp_path, tls=TlsSettings(cert_file=pki["server_cert"]))
    with pytest.raises(FailedPrecondition, match="tls.cert_file and tls.key_file go together"):
        start_server(settings, ["training"], port=0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_http_door_scopes_and_tls(serve, pki, caplog):
    """The OpenAI-compatible door and its console API, with the real model behind them, over HTTPS with
    client certificates."""
    port = _free_port()
    mutual = TlsSettings(cert_file=pki["server_cert"], key_file=pki["server_key"], ca_file=pki["ca_cert"],
                         require_client_cert=True)
    serve("inference", tls=mutual, **_scoped(server__http_port=port))
    caplog.set_level(logging.INFO, logger="tutorforge.audit")
    with_cert = ssl.create_default_context(cafile=str(pki["ca_cert"]))
    with_cert.load_cert_chain(str(pki["client_cert"]), str(pki["client_key"]))
    base = f"https://127.0.0.1:{port}"
    with httpx.Client(base_url=base, verify=with_cert, timeout=120) as http:
        def status(method: str, path: str, scope: str | None, **kwargs: object) -> int:
            headers = {"Authorization": f"Bearer {TOKENS[scope]}"} if scope else {}
            return http.request(method, path, headers=headers, **kwargs).status_code

        assert status("GET", "/v1/models", None) == 401
        assert status("GET", "/v1/models", "chat") == 200
        assert status("GET", "/v1/models", "author") == 403
        chat = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16, "retrieval": False}
        assert status("POST", "/v1/chat/completions", "chat", json=chat) == 200
        assert status("POST", "/console/api/adapters/nobody/load", "chat") == 403
        assert status("POST", "/console/api/adapters/nobody/load", "admin") == 404
    # No client certificate: refused in the handshake (TLS 1.2) or right after it (TLS 1.3).
    with pytest.raises((httpx.ConnectError, httpx.RemoteProtocolError)):
        httpx.get(f"{base}/v1/models", verify=ssl.create_default_context(cafile=str(pki["ca_cert"])), timeout=10)
    audits = [(a.fields["who"], a.fields["method"], a.fields["result"]) for a in caplog.records if a.name == "tutorforge.audit"]
    load = "POST /console/api/adapters/nobody/load"
    # The console's call goes on to the gRPC LoadAdapter with the server's own (admin) token: audited too.
    assert audits == [("chat", load, "403"), ("admin", "/tutorforge.v1.InferenceService/LoadAdapter", "NOT_FOUND"),
                      ("admin", load, "404")]
