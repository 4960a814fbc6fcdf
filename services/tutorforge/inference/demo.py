"""Demo stage: a few tutor chat turns over the ingested sample material, streamed, with citations —
answered by the adapter the training stage published, or by the base model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tutorforge.inference.cli import citations_table
from tutorforge.v1 import common_pb2
from tutorforge.v1 import inference_pb2 as pb
from tutorforge.v1 import inference_pb2_grpc

if TYPE_CHECKING:
    from tutorforge.demo import DemoContext

TITLE = "Inference: the Socratic tutor answers from the material, with citations"

QUESTIONS = (
    "Why can't I just add the denominators when I add 1/2 and 1/3?",
    "What does a leaf do with the sunlight it absorbs?",
)
FOLLOW_UP = "I think the plant eats soil. Is that right?"
# Short turns keep the stage quick on a 2-core CPU.
NEW_TOKENS = 64


def run(context: DemoContext) -> None:
    stub = inference_pb2_grpc.InferenceServiceStub(context.channel)
    console = context.console
    adapter = context.results.get("adapter", "")
    console.print(f"answering with {'adapter [bold]' + adapter + '[/]' if adapter else 'the base model'} · {NEW_TOKENS} new tokens per turn")
    # Retrieval on with the tutor's calibrated defaults (inference.chat_*): what any chatbot gets.
    retrieval = pb.RetrievalOptions(enabled=True)
    conversations = [[question] for question in QUESTIONS]
    conversations[-1].append(FOLLOW_UP)
    for turns in conversations:
        history: list[common_pb2.ChatMessage] = []
        for question in turns:
            history.append(common_pb2.ChatMessage(role="user", content=question))
            console.print(f"\n[bold cyan]student>[/] {question}")
            request = pb.ChatStreamRequest(
                messages=history,
                # Fall back explicitly: the demo still talks when training produced no usable adapter.
                model=pb.ModelSelection(adapter=adapter, fallback_to_base=True),
                parameters=pb.GenerationParameters(max_tokens=NEW_TOKENS),
                retrieval=retrieval,
            )
            reply, citations = [], []
            console.print("[bold green]tutor>[/] ", end="")
            for event in stub.ChatStream(request, timeout=600):
                kind = event.WhichOneof("event")
                if kind == "citations":
                    citations = list(event.citations.citations)
                elif kind == "token":
                    reply.append(event.token.text)
                    console.print(event.token.text, end="", markup=False, highlight=False, soft_wrap=True)
                else:
                    summary = event.summary
            console.print()
            if citations:
                console.print(citations_table(citations))
            answered_by = summary.adapter or "base" + (" (fallback)" if summary.fell_back_to_base else "")
            console.print(
                f"[dim]{answered_by} · {summary.usage.completion_tokens} tokens · first token "
                f"{summary.time_to_first_token_seconds:.2f} s · {summary.duration_seconds:.1f} s[/]"
            )
            history.append(common_pb2.ChatMessage(role="assistant", content="".join(reply)))
