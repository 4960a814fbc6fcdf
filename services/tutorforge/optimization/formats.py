"""How a program talks to its LM: its LM format, what DSPy calls an adapter (in tutorforge "adapter" always
means a LoRA adapter). Small models (SmolLM2-135M) do not follow DSPy's field markers: the
stock Chat/JSON/XML adapters parse 0–4 of 5 of their replies. `PlainAdapter` sends the inputs as a
plain chat and takes the whole reply as the single output field. DSPy's stock adapters stay available
for capable models."""

from __future__ import annotations

import re
from enum import Enum
from typing import Any

import dspy
from dspy.signatures.signature import Signature
from dspy.utils.exceptions import AdapterParseError

from tutorforge.core.errors import FailedPrecondition, InvalidArgument

REASONING_FIELD = "reasoning"


class LmFormatKind(str, Enum):
    PLAIN = "plain"
    CHAT = "chat"
    JSON = "json"


def _label(signature: type[Signature], name: str) -> str:
    prefix = signature.fields[name].json_schema_extra.get("prefix") or name.replace("_", " ").capitalize()
    return prefix.strip().rstrip(":")


class PlainAdapter(dspy.Adapter):
    """Plain chat for small models.

    System turn: the signature's instructions. User turn: the secondary inputs as short labelled lines,
    then the first input field's text alone (what the model should answer). Assistant turn: the output
    text. With chain of thought (a `reasoning` output) the model is asked to think first and write its
    reply after "Response:"; a reply without that label is taken whole as the response.

    Signatures with several outputs (optimizers' own meta-prompts, e.g. COPRO's proposals) get the
    reply in their first output field and empty strings in the others."""

    def _outputs(self, signature: type[Signature]) -> tuple[str | None, str, list[str]]:
        names = [name for name in signature.output_fields if name != REASONING_FIELD]
        if not names:
            raise ValueError(f"{signature.__name__} has no output field besides reasoning")
        reasoning = REASONING_FIELD if REASONING_FIELD in signature.output_fields else None
        return reasoning, names[0], names[1:]

    def format_system_message(self, signature: type[Signature]) -> str:
        reasoning, output, _ = self._outputs(signature)
        text = signature.instructions.strip()
        if reasoning:
            text += f"\nThink it through briefly first, then write '{_label(signature, output)}:' followed by your reply."
        return text

    def format_user_message_content(
        self,
        signature: type[Signature],
        inputs: dict[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        names = list(signature.input_fields)
        lines = [prefix] if prefix else []
        labelled = [
            f"{_label(signature, n)}: {inputs[n]}" for n in names[1:] if inputs.get(n) not in (None, "")
        ]
        lines += labelled
        if names and inputs.get(names[0]) not in (None, ""):
            if labelled:
                lines.append("")
            lines.append(str(inputs[names[0]]))
        if suffix:
            lines.append(suffix)
        return "\n".join(lines).strip()

    def format_assistant_message_content(
        self,
        signature: type[Signature],
        outputs: dict[str, Any],
        missing_field_message: str | None = None,
    ) -> str:
        reasoning, output, _ = self._outputs(signature)
        reply = outputs.get(output)
        reply = str(reply) if reply is not None else (missing_field_message or "")
        if reasoning and outputs.get(reasoning):
            return f"{outputs[reasoning]}\n\n{_label(signature, output)}: {reply}"
        return reply

    def parse(self, signature: type[Signature], completion: str) -> dict[str, Any]:
        reasoning, output, others = self._outputs(signature)
        text = completion.strip()
        if not text:
            raise AdapterParseError(
                adapter_name=type(self).__name__,
                signature=signature,
                lm_response=completion,
                message="empty reply",
            )
        values: dict[str, Any] = {name: "" for name in others}
        if not reasoning:
            return {**values, output: text}
        parts = re.split(rf"(?im)^[\s*]*{re.escape(_label(signature, output))}[\s*]*:\s*", text)
        if len(parts) > 1 and parts[-1].strip():
            return {**values, reasoning: parts[0].strip(), output: parts[-1].strip()}
        return {**values, reasoning: "", output: text}


class TutorTurns:
    """Mixin for an adapter: teaching turns go to the tutor chat with the predictor's instructions and
    demos as an inline program (and retrieval, as chat does) — whatever the LM format kind, since that is
    how chat will serve the program; every other signature (the optimizers' own prompts) is formatted by
    the adapter it is mixed into. The prediction carries the passages chat retrieved, for the metric."""

    def __call__(
        self,
        lm: dspy.BaseLM,
        lm_kwargs: dict[str, Any],
        signature: type[Signature],
        demos: list[dict[str, Any]],
        inputs: dict[str, Any],
    ) -> list[dict[str, Any]]:
        from tutorforge.optimization.program import TutorProgram, is_teaching

        if not is_teaching(signature):
            return super().__call__(lm, lm_kwargs, signature, demos, inputs)
        tutor = getattr(lm, "tutor", None)
        if tutor is None:
            raise FailedPrecondition("teaching turns need the platform's tutor LM (InferenceLM), not " + type(lm).__name__)
        module = TutorProgram(signature.instructions)
        module.respond.demos = demos
        reply = tutor.reply(
            [*inputs.get("history", []), {"role": "user", "content": str(inputs["query"])}],
            adapter=lm.adapter,
            program=module.to_teaching(adapter=lm.adapter, frequency_penalty=getattr(lm, "frequency_penalty", 0.0)),
            retrieval=lm.retrieval,
            max_tokens=int(lm_kwargs.get("max_tokens") or lm.kwargs.get("max_tokens") or 0),
        )
        return [{"response": reply.text, "passages": list(reply.passages)}]


class TutorPlainFormat(TutorTurns, PlainAdapter):
    pass


class TutorChatFormat(TutorTurns, dspy.ChatAdapter):
    pass


class TutorJSONFormat(TutorTurns, dspy.JSONAdapter):
    pass


def make_format(kind: LmFormatKind | str) -> dspy.Adapter:
    try:
        kind = LmFormatKind(kind)
    except ValueError as error:
        choices = ", ".join(k.value for k in LmFormatKind)
        raise InvalidArgument(f"LM format {kind!r} is not known: use one of {choices}") from error
    if kind is LmFormatKind.PLAIN:
        return TutorPlainFormat()
    if kind is LmFormatKind.CHAT:
        return TutorChatFormat()
    return TutorJSONFormat()
