"""Structured output: replies held to a JSON schema token by token, and the checks that refuse a bad
`response_format` before anything is generated.

The embedded engine enforces the schema with llguidance: before each sampling step every token that
cannot continue a valid document is masked out, and the reply ends as soon as the document is complete.
Remote engines pass the format on to their server (OpenAI `response_format`, TGI `grammar`)."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from tutorforge.core.chat_endpoint import schema_format
from tutorforge.core.errors import FailedPrecondition, InvalidArgument
from tutorforge.core.validation import MAX_JSON_DEPTH, json_depth, loads_json
from tutorforge.inference.types import ResponseFormat

if TYPE_CHECKING:
    import torch

# What {"type": "json_object"} asks for.
JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}
MAX_SCHEMA_CHARS = 64_000
# Compact JSON, separators as json.dumps writes them: given free whitespace, a small model fills its
# reply with newlines and never closes the document.
_COMPILE_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_TYPES = ("text", "json_object", "json_schema")


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError as error:
        raise FailedPrecondition(
            "response_format needs llguidance in the inference server: pip install 'tutorforge[inference]'"
        ) from error
    return llguidance


def parse_response_format(kind: str, schema: str | dict[str, Any] | None = None, name: str = "") -> ResponseFormat | None:
    """A checked ResponseFormat from request fields (None = free text); raises InvalidArgument naming
    response_format when the type is unknown or the schema is not a usable JSON Schema."""
    kind = kind or "text"
    if kind not in _TYPES:
        raise InvalidArgument(f"response_format.type {kind!r} is not one of {', '.join(_TYPES)}")
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat(type="json_object", name=name)
    if schema is None or schema == "":
        raise InvalidArgument("response_format.json_schema.schema is missing: json_schema needs the JSON Schema")
    if isinstance(schema, str):
        if len(schema) > MAX_SCHEMA_CHARS:
            raise InvalidArgument(f"response_format.json_schema.schema is longer than {MAX_SCHEMA_CHARS} characters")
        try:
            value = loads_json(schema, "response_format.json_schema.schema")
        except json.JSONDecodeError as error:
            raise InvalidArgument(f"response_format.json_schema.schema is not valid JSON: {error}") from error
    else:
        value = schema
        if json_depth(value) > MAX_JSON_DEPTH:
            raise InvalidArgument(f"response_format.json_schema.schema nests more than {MAX_JSON_DEPTH} levels deep")
    if not isinstance(value, dict):
        raise InvalidArgument("response_format.json_schema.schema must be a JSON object (a JSON Schema)")
    text = json.dumps(value, sort_keys=True)
    if len(text) > MAX_SCHEMA_CHARS:
        raise InvalidArgument(f"response_format.json_schema.schema is longer than {MAX_SCHEMA_CHARS} characters")
    response_format = ResponseFormat(type="json_schema", schema=text, name=name)
    grammar_of(response_format)
    return response_format


def schema_of(response_format: ResponseFormat) -> dict[str, Any]:
    return json.loads(response_format.schema) if response_format.type == "json_schema" else dict(JSON_OBJECT_SCHEMA)


def grammar_of(response_format: ResponseFormat, tokenizer: Any = None) -> str:
    """The llguidance grammar of a structured format; InvalidArgument when the schema cannot be enforced
    (unknown types, dangling $ref, unsupported keywords)."""
    llguidance = _llguidance()
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema_of(response_format), overrides=_COMPILE_OPTIONS)
    except ValueError as error:
        raise InvalidArgument(f"response_format.json_schema.schema cannot be used: {error}") from error
    problem = llguidance.LLMatcher.validate_grammar(grammar, tokenizer)
    if problem:
        raise InvalidArgument(f"response_format.json_schema.schema cannot be enforced: {problem}")
    return grammar


def openai_response_format(response_format: ResponseFormat) -> dict[str, Any]:
    """The OpenAI API's response_format body."""
    if response_format.type == "json_object":
        return {"type": "json_object"}
    return schema_format("openai", response_format.name, schema_of(response_format))


class JsonConstraint:
    """One request's grammar state: which tokens may come next, and whether the document is complete."""

    def __init__(self, matcher: Any, vocabulary: int):
        self._matcher = matcher
        self._vocabulary = vocabulary

    def mask(self, logits: torch.Tensor) -> None:
        """Set the logits of tokens that cannot continue a valid document to -inf (in place)."""
        import torch

        allowed = torch.frombuffer(bytearray(self._matcher.compute_logit_bias()), dtype=torch.uint8).bool()
        width = min(self._vocabulary, logits.shape[-1])
        logits[:width].masked_fill_(~allowed[:width], float("-inf"))
        # Rows of the embedding matrix beyond the tokenizer's vocabulary are never valid text.
        logits[width:] = float("-inf")

    def advance(self, token_id: int) -> None:
        self._matcher.consume_token(token_id)

    @property
    def complete(self) -> bool:
        """The document is finished (or the grammar cannot go on): nothing but the end token may follow."""
        return self._matcher.is_stopped()


class StructuredDecoding:
    """Builds per-request constraints for one tokenizer (its llguidance view is built once, ~0.3 s)."""

    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer
        self._lock = threading.Lock()
        self._view: Any = None

    def _tokenizer_view(self) -> Any:
        with self._lock:
            if self._view is None:
                import llguidance.hf

                self._view = llguidance.hf.from_tokenizer(self._tokenizer)
            return self._view

    def constraint(self, response_format: ResponseFormat) -> JsonConstraint:
        llguidance = _llguidance()
        view = self._tokenizer_view()
        matcher = llguidance.LLMatcher(view, grammar_of(response_format, view), log_level=0)
        if matcher.is_error():
            raise InvalidArgument(f"response_format.json_schema.schema cannot be enforced: {matcher.get_error()}")
        return JsonConstraint(matcher, view.vocab_size)
