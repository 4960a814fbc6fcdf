"""The inference service's chat-program hook (`tutorforge.inference.programs`): a saved program, served.

For serving, a compiled program boils down to its (optimized) instructions and its demonstrations. The
chat the inference service answers carries plain student turns, so the demonstrations are rendered the
way the plain adapter renders a query-only conversation: the student's question, then the tutor's reply
(no reasoning, no labelled context lines); the inference service adds retrieved passages itself."""

from __future__ import annotations

from tutorforge.core.storage import ArtifactStore
from tutorforge.inference.programs import ChatProgram
from tutorforge.optimization.adapters import REASONING_FIELD, PlainAdapter
from tutorforge.optimization.program import ProgramInfo, ProgramRepository, TutorProgram


def chat_program(info: ProgramInfo, program: TutorProgram) -> ChatProgram:
    predictor = program.predictors()[0]
    signature = predictor.signature
    for name in ("context", "metadata", REASONING_FIELD):
        if name in signature.fields:
            signature = signature.delete(name)
    return ChatProgram(
        name=f"{info.name}@{info.version}",
        instructions=signature.instructions.strip(),
        demonstrations=PlainAdapter().format_demos(signature, [dict(demo) for demo in predictor.demos]),
        adapter=info.adapter,
    )


class SavedProgramResolver:
    """Resolves `NAME` (latest version) or `NAME@VERSION` from the program store."""

    def __init__(self, store: ArtifactStore):
        self.programs = ProgramRepository(store)

    def resolve(self, name: str) -> ChatProgram:
        program_name, _, version = name.partition("@")
        info, program = self.programs.load(program_name, version)
        return chat_program(info, program)


def chat_program_resolver(store: ArtifactStore) -> SavedProgramResolver:
    return SavedProgramResolver(store)
