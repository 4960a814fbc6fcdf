"""Who may call what: bearer tokens with scopes, the scope each RPC needs, the start-up check that an
empty token never turns auth off by accident, and one audit log line per mutating call.

Scopes: `chat` (tutor chat, generation, search: what a chatbot needs), `author` (ingest, datasets,
training, optimization and reading their records), `admin` (adapters load/unload, program promotion,
deletes; an admin token may call everything). `server.api_token` is an admin token named "api"; the
`server.tokens` map (scope -> token) adds one token per scope, named after it."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import grpc
from pydantic import SecretStr

from tutorforge.core.errors import FailedPrecondition

log = logging.getLogger("tutorforge.audit")


class Scope(str, Enum):
    CHAT = "chat"
    AUTHOR = "author"
    ADMIN = "admin"


_C, _A, _D = Scope.CHAT, Scope.AUTHOR, Scope.ADMIN
# Health and reflection stay open so that probes and grpcurl work without the token; they change nothing.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# Method -> (scope it needs, whether it changes stored state and so is audited). A method missing here
# needs `admin` (fail closed); a test checks every RPC of the protos is listed.
METHODS: dict[str, tuple[Scope, bool]] = {
    "/tutorforge.v1.InferenceService/Generate": (_C, False),
    "/tutorforge.v1.InferenceService/GenerateStream": (_C, False),
    "/tutorforge.v1.InferenceService/Chat": (_C, False),
    "/tutorforge.v1.InferenceService/ChatStream": (_C, False),
    "/tutorforge.v1.InferenceService/ListAdapters": (_C, False),
    "/tutorforge.v1.InferenceService/LoadAdapter": (_D, True),
    "/tutorforge.v1.InferenceService/UnloadAdapter": (_D, True),
    "/tutorforge.v1.RetrievalService/Search": (_C, False),
    "/tutorforge.v1.RetrievalService/IngestDocuments": (_A, True),
    "/tutorforge.v1.RetrievalService/GetDocument": (_A, False),
    "/tutorforge.v1.RetrievalService/ListDocuments": (_A, False),
    "/tutorforge.v1.RetrievalService/GetStats": (_A, False),
    "/tutorforge.v1.RetrievalService/DeleteDocument": (_D, True),
    "/tutorforge.v1.DatasetService/CreateDataset": (_A, True),
    "/tutorforge.v1.DatasetService/GetJob": (_A, False),
    "/tutorforge.v1.DatasetService/ListJobs": (_A, False),
    "/tutorforge.v1.DatasetService/WatchJob": (_A, False),
    "/tutorforge.v1.DatasetService/CancelJob": (_A, True),
    "/tutorforge.v1.DatasetService/GetDataset": (_A, False),
    "/tutorforge.v1.DatasetService/ListDatasets": (_A, False),
    "/tutorforge.v1.DatasetService/ExportDataset": (_A, False),
    "/tutorforge.v1.DatasetService/ValidateRecords": (_A, False),
    "/tutorforge.v1.DatasetService/DeleteDataset": (_D, True),
    "/tutorforge.v1.TrainingService/StartTraining": (_A, True),
    "/tutorforge.v1.TrainingService/GetJob": (_A, False),
    "/tutorforge.v1.TrainingService/ListJobs": (_A, False),
    "/tutorforge.v1.TrainingService/WatchJob": (_A, False),
    "/tutorforge.v1.TrainingService/CancelJob": (_A, True),
    "/tutorforge.v1.TrainingService/ResumeJob": (_A, True),
    "/tutorforge.v1.OptimizationService/StartOptimization": (_A, True),
    "/tutorforge.v1.OptimizationService/GetJob": (_A, False),
    "/tutorforge.v1.OptimizationService/ListJobs": (_A, False),
    "/tutorforge.v1.OptimizationService/WatchJob": (_A, False),
    "/tutorforge.v1.OptimizationService/CancelJob": (_A, True),
    "/tutorforge.v1.OptimizationService/ListPrograms": (_A, False),
    "/tutorforge.v1.OptimizationService/GetProgram": (_A, False),
    "/tutorforge.v1.OptimizationService/Evaluate": (_A, True),
    "/tutorforge.v1.OptimizationService/GetEvaluation": (_A, False),
    "/tutorforge.v1.OptimizationService/PromoteProgram": (_D, True),
}
# HTTP door (inference/http.py and its console): (HTTP method, path prefix, scope, audited), first match
# wins; anything else needs `admin`. The console's API calls the services with the server's own token,
# so its caller's scope is checked (and its changes audited) here.
HTTP_RULES: tuple[tuple[str, str, Scope, bool], ...] = (
    ("GET", "/v1/models", _C, False),
    ("POST", "/v1/chat/completions", _C, False),
    ("GET", "/console/api/tutors", _C, False),
    ("GET", "/console/api/search", _C, False),
    ("GET", "/console/api/", _A, False),
    ("POST", "/console/api/adapters/", _D, True),
)
# The request field that names what a mutating call acts on, first present wins (audit "resource").
_RESOURCE_FIELDS = ("name", "job_id", "run_id", "document_id", "program", "adapter_name", "dataset")


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[Scope]

    def may(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes


ANONYMOUS = Principal("anonymous", frozenset(Scope))
# Why a call is refused: (status, message), or None.
Denial = tuple[grpc.StatusCode, str] | None


class AccessPolicy:
    """Bearer tokens -> principals. Without any token, auth is off and every caller is `anonymous`."""

    def __init__(self, tokens: dict[str, Principal]):
        self._tokens = [(f"Bearer {token}".encode(), principal) for token, principal in tokens.items()]

    @classmethod
    def from_token(cls, api_token: str | None) -> AccessPolicy:
        """One admin token (or none: auth off)."""
        return cls({api_token: Principal("api", frozenset({Scope.ADMIN}))} if api_token else {})

    @classmethod
    def from_settings(cls, server: Any) -> AccessPolicy:
        """From ServerSettings (`api_token`, `tokens`); refuses an empty token unless `insecure` is set."""
        check_tokens(server)
        tokens: dict[str, Principal] = {}
        if server.api_token is not None and server.api_token.get_secret_value():
            tokens[server.api_token.get_secret_value()] = Principal("api", frozenset({Scope.ADMIN}))
        for scope, secret in (server.tokens or {}).items():
            if secret.get_secret_value():
                tokens[secret.get_secret_value()] = Principal(scope, frozenset({Scope(scope)}))
        if not tokens:
            log.warning("no API token: every caller may call everything (fine on a laptop's loopback only)")
        return cls(tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def authenticate(self, authorization: str) -> Principal | None:
        """The token's principal, or None when it matches none. Compares with every token in constant time."""
        if not self._tokens:
            return ANONYMOUS
        given = authorization.encode()
        found = None
        for expected, principal in self._tokens:
            if hmac.compare_digest(given, expected):
                found = principal
        return found

    def denial(self, principal: Principal | None, scope: Scope, what: str) -> Denial:
        """Why `principal` may not call `what` (needs `scope`), or None when it may."""
        if principal is None:
            return grpc.StatusCode.UNAUTHENTICATED, "missing or wrong 'authorization: Bearer <token>'"
        if not principal.may(scope):
            have = ", ".join(sorted(s.value for s in principal.scopes))
            return (
                grpc.StatusCode.PERMISSION_DENIED,
                f"token {principal.name!r} (scope {have}) may not call {what}: it needs a {scope.value!r} token",
            )
        return None

    def check_rpc(self, method: str, metadata: dict[str, Any]) -> tuple[Principal | None, Denial]:
        principal = self.authenticate(str(metadata.get("authorization", "")))
        scope, _ = METHODS.get(method, (Scope.ADMIN, True))
        return principal, self.denial(principal, scope, method)

    def check_http(self, method: str, path: str, authorization: str) -> tuple[Principal | None, Denial, bool]:
        """(caller, why refused or None, whether the request is audited) of an HTTP request."""
        scope, mutating = next(
            ((s, m) for verb, prefix, s, m in HTTP_RULES if verb == method and path.startswith(prefix)), (Scope.ADMIN, True)
        )
        principal = self.authenticate(authorization)
        return principal, self.denial(principal, scope, f"{method} {path}"), mutating


def check_tokens(server: Any) -> None:
    """A token that is configured but empty (an unset Secret, a typo in a values file) must not silently
    turn auth off: refuse to start unless `insecure` (the `--insecure` flag) says that is meant."""
    empty = []
    if server.api_token is not None and not server.api_token.get_secret_value().strip():
        empty.append("TUTORFORGE_SERVER__API_TOKEN")
    for scope, secret in (server.tokens or {}).items():
        if scope not in Scope._value2member_map_:
            raise FailedPrecondition(f"server.tokens.{scope}: unknown scope; use chat, author or admin")
        if not secret.get_secret_value().strip():
            empty.append(f"TUTORFORGE_SERVER__TOKENS__{scope.upper()}")
    if empty and not server.insecure:
        raise FailedPrecondition(
            f"{', '.join(empty)} is set but empty, which would turn authentication off: set a token, or pass "
            "--insecure (TUTORFORGE_SERVER__INSECURE=true) to serve without one on purpose"
        )


def internal_token(server: Any) -> str | None:
    """The token a server presents when it calls the other services (datasets -> retrieval, …): the API
    token, else the admin token (services call each other's author- and chat-scoped RPCs)."""
    for secret in (server.api_token, (server.tokens or {}).get("admin")):
        if isinstance(secret, SecretStr) and secret.get_secret_value():
            return secret.get_secret_value()
    return None


# --- audit ------------------------------------------------------------------------------------------------


def _resource(request: Any) -> str:
    for name in _RESOURCE_FIELDS:
        value = getattr(request, name, None)
        if isinstance(value, str) and value:
            return f"{name}={value[:200]}"
    return "-"


def audit(who: Principal | None, method: str, resource: str, result: str, peer: str) -> None:
    """One audit log line: who (token name and scopes), what (method and resource), result."""
    name = who.name if who else "unauthenticated"
    scopes = ",".join(sorted(s.value for s in who.scopes)) if who else ""
    fields = {"audit": True, "who": name, "scopes": scopes, "method": method, "resource": resource,
              "result": result, "peer": peer}
    log.info("audit %s %s %s %s", name, method, resource, result, extra={"fields": fields})


def audited(method: str, principal: Principal | None, behavior: Callable, streaming: bool) -> Callable:
    """Wrap an (already intercepted) handler of a mutating method so that every call, refused or not,
    leaves one `audit` log line: who (token name and scopes), what (method, resource), result (code)."""
    if method.startswith(OPEN_PREFIXES) or not METHODS.get(method, (Scope.ADMIN, True))[1]:
        return behavior

    def record(request: Any, context: grpc.ServicerContext) -> None:
        audit(principal, method, _resource(request), (context.code() or grpc.StatusCode.OK).name, context.peer())

    if streaming:
        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from behavior(request, context)
            finally:
                record(request, context)

        return stream

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(request, context)
        finally:
            record(request, context)

    return unary
