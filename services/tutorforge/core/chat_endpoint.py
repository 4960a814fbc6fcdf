"""One blocking chat completion against a model server outside the platform: an OpenAI-compatible one
(vLLM, SGLang, tutorforge's own HTTP door) or TGI's Messages API, both at `/v1/chat/completions`, with
the reply constrained to a JSON Schema in the server's own form. The datasets teacher uses it; the
inference service's streaming engines (inference/remote.py) share its schema forms and status mapping."""

from __future__ import annotations

import json
from typing import Any

from tutorforge.core.errors import InvalidArgument, NotFound, ResourceExhausted, TutorforgeError, Unavailable

KINDS = ("openai", "tgi")


def schema_format(kind: str, name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The `response_format` that asks `kind`'s server for a document valid against `schema`."""
    if kind == "tgi":
        # TGI's GrammarType wants the schema in `value`; it refuses OpenAI's json_schema form.
        return {"type": "json", "value": schema}
    spec = {"name": name or "response", "schema": schema, "strict": True}
    return {"type": "json_schema", "json_schema": spec}


def status_error(status: int | None, message: str) -> TutorforgeError:
    """A model server's HTTP status as the domain error the platform reports (no status: unreachable)."""
    if status == 404:
        return NotFound(message)
    if status in (400, 422):
        return InvalidArgument(message)
    if status == 429:
        return ResourceExhausted(message)
    return Unavailable(message)


class ChatEndpoint:
    """A server's chat completions. `model` "" = the server's base model (TGI: "tgi"; OpenAI-compatible:
    the first model of /v1/models that is no adapter)."""

    def __init__(self, url: str, kind: str, model: str = "", token: str = "", timeout: float = 600):
        import httpx

        if kind not in KINDS:
            raise InvalidArgument(f"model server kind {kind!r} is not one of {', '.join(KINDS)}")
        # OpenAI-style URLs are usually given with their /v1; the routes below add it themselves.
        self.url = url.rstrip("/").removesuffix("/v1")
        self.kind = kind
        self.model = model
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def _checked(self, send: Any) -> Any:
        import httpx

        try:
            response = send()
        except httpx.HTTPError as error:
            raise Unavailable(f"{self.kind} server at {self.url} is unreachable: {error}") from error
        if response.status_code >= 400:
            where = f"{self.kind} server at {self.url}"
            raise status_error(response.status_code, f"{where}: HTTP {response.status_code}: {response.text[:300]}")
        return response

    def _served_model(self) -> str:
        if self.model:
            return self.model
        if self.kind == "tgi":
            return "tgi"
        response = self._checked(lambda: self._http.get("/v1/models", timeout=10))
        try:
            roots = [m["id"] for m in response.json().get("data") or [] if not m.get("parent")]
        except (ValueError, AttributeError, KeyError, TypeError) as error:
            raise Unavailable(f"{self.kind} server at {self.url}: GET /v1/models is no model list") from error
        if not roots:
            raise Unavailable(f"{self.kind} server at {self.url} serves no base model (GET /v1/models)")
        self.model = roots[0]
        return self.model

    def probe(self) -> None:
        """Raise (Unavailable, NotFound, ...) unless the server answers; cheap, for checks up front."""
        if self.kind == "tgi":
            self._checked(lambda: self._http.get("/health", timeout=10))
        else:
            self._served_model()

    def complete(
        self,
        messages: list[dict[str, str]],
        max_tokens: int,
        schema: dict[str, Any] | None = None,
        name: str = "",
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: tuple[str, ...] = (),
        seed: int | None = None,
    ) -> str:
        """The reply's text; temperature 0 = greedy on both kinds of server."""
        body: dict[str, Any] = {
            "model": self._served_model(),
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        # TGI refuses top_p = 1.0 (it must be below 1); leaving it out means the same everywhere.
        if top_p < 1.0:
            body["top_p"] = top_p
        if stop:
            body["stop"] = list(stop)
        if seed is not None:
            body["seed"] = seed
        if schema is not None:
            body["response_format"] = schema_format(self.kind, name, schema)
        reply: Any = self._checked(lambda: self._http.post("/v1/chat/completions", json=body)).text
        try:
            reply = json.loads(reply)
            text = reply["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise Unavailable(f"{self.kind} server at {self.url} sent no reply: {reply!s:.300}") from error
        if self.kind == "tgi":
            # TGI's Messages API keeps the stop sequence in the reply; OpenAI-compatible servers drop it.
            for sequence in stop:
                text = text.split(sequence, 1)[0]
        return text

    def close(self) -> None:
        self._http.close()
