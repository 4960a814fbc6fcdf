"""The RAG tutor chat against a real retrieval service, over gRPC and the OpenAI-compatible HTTP door
(driven by the official openai client)."""

from __future__ import annotations

import socket
from dataclasses import replace

import grpc
import openai
import pytest
from tutorforge.artifacts.programs import (
    Demonstration,
    LmSettings,
    ProgramInfo,
    ProgramRepository,
    TeachingProgram,
)
from tutorforge.core.convert import program_to_proto
from tutorforge.core.teaching import DEFAULT_SYSTEM_PROMPT, NO_MATERIAL_NOTICE, Citation, build_prompt
from tutorforge.v1 import common_pb2, inference_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc
from tutorforge.v1 import inference_pb2 as pb

DOCUMENTS = {
    "photosynthesis": (
        "Photosynthesis is how plants make their own food. Chlorophyll in the leaves absorbs sunlight, the plant "
        "takes in carbon dioxide through pores called stomata, and water rises from the roots. Using light energy "
        "the plant turns carbon dioxide and water into glucose, and releases oxygen."
    ),
    "volcanoes": (
        "Volcanoes form where magma rises to the surface, mostly at the edges of tectonic plates. When pressure "
        "builds up the volcano erupts and lava flows down its sides."
    ),
}
QUESTION = "How do plants make their own food?"
RETRIEVAL = pb.RetrievalOptions(enabled=True, limit=2, score_threshold=0.2)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def chat_server(module_serve):
    port = _free_port()
    running, channel = module_serve(
        "inference", "retrieval", inference__threads=1, server__http_port=port,
        retrieval__chunk_size_tokens=64, retrieval__chunk_overlap_tokens=8,
    )
    upload = []
    for document_id, text in DOCUMENTS.items():
        upload.append(
            retrieval_pb2.IngestDocumentsRequest(
                document=retrieval_pb2.DocumentHeader(
                    document_id=document_id, filename=f"{document_id}.md",
                    metadata=retrieval_pb2.DocumentMetadata(source=f"{document_id}.md", category="science"),
                )
            )
        )
        upload.append(retrieval_pb2.IngestDocumentsRequest(content=text.encode()))
    retrieval_pb2_grpc.RetrievalServiceStub(channel).IngestDocuments(iter(upload))
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=300)
    return inference_pb2_grpc.InferenceServiceStub(channel), client, running


@pytest.fixture(scope="module")
def server(chat_server):
    return chat_server[:2]


@pytest.fixture(scope="module")
def serve_store(chat_server):
    return chat_server[2].runtime.store


def _chat(question: str = QUESTION, retrieval: pb.RetrievalOptions = RETRIEVAL, **fields: object) -> pb.ChatRequest:
    return pb.ChatRequest(
        messages=[common_pb2.ChatMessage(role="user", content=question)],
        parameters=pb.GenerationParameters(max_tokens=24),
        retrieval=retrieval,
        **fields,
    )


def test_chat_answers_with_citations_from_retrieval(server):
    stub, _ = server
    response = stub.Chat(_chat())
    assert response.message.role == "assistant" and response.message.content.strip()
    assert response.citations, "retrieval found nothing"
    first = response.citations[0]
    assert first.tag == "[1]" and first.document_id == "photosynthesis"
    assert first.source == "photosynthesis.md" and first.score > 0.2 and "chlorophyll" in first.text.lower()
    assert [c.tag for c in response.citations] == [f"[{i}]" for i in range(1, len(response.citations) + 1)]
    assert response.summary.usage.prompt_tokens > 60  # the passages are in the prompt


def test_chat_stream_sends_citations_then_tokens_then_summary(server):
    stub, _ = server
    events = list(stub.ChatStream(pb.ChatStreamRequest(messages=_chat().messages, parameters=_chat().parameters, retrieval=RETRIEVAL)))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "citations" and kinds[-1] == "summary"
    assert set(kinds[1:-1]) == {"token"}
    text = "".join(e.token.text for e in events[1:-1])
    assert text == stub.Chat(_chat()).message.content


def test_chat_without_retrieval_has_no_citations(server):
    stub, _ = server
    response = stub.Chat(_chat(retrieval=pb.RetrievalOptions(enabled=False)))
    assert not response.citations
    assert response.summary.usage.prompt_tokens < stub.Chat(_chat()).summary.usage.prompt_tokens


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([], "messages is empty"),
        ([("user", "hi"), ("assistant", "hello")], "last turn"),
        ([("robot", "hi")], "role"),
        ([("user", "hi"), ("system", "be brief"), ("user", "hi")], "system turn"),
    ],
)
def test_chat_rejects_malformed_conversations(server, messages, fragment):
    stub, _ = server
    request = pb.ChatRequest(messages=[common_pb2.ChatMessage(role=r, content=c) for r, c in messages])
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in caught.value.details()


def test_unknown_program_is_refused(server):
    stub, _ = server
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(_chat(program="no-such-program"))
    assert caught.value.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)


def test_prompt_carries_tutor_instructions_and_tagged_passages():
    citation = Citation("[1]", "doc", 0, "doc.md", 0.9, "Water boils at 100 degrees Celsius at sea level.")
    messages = build_prompt([{"role": "user", "content": "When does water boil?"}], [citation])
    assert messages[0]["role"] == "system" and messages[0]["content"].startswith(DEFAULT_SYSTEM_PROMPT)
    assert "[1] (source: doc.md)\nWater boils" in messages[0]["content"]
    own = build_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], [])
    assert own == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert build_prompt([{"role": "user", "content": "Hi"}], [], system_prompt="Custom.")[0]["content"] == "Custom."


def test_openai_client_lists_models(server):
    _, client = server
    ids = [model.id for model in client.models.list()]
    assert ids[0] == "SmolLM2-135M-Instruct"


def test_openai_client_chat_completion_with_citations(server):
    stub, client = server
    completion = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=24,
        temperature=0,
        extra_body={"retrieval": {"limit": 2, "score_threshold": 0.2}},
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == stub.Chat(_chat()).message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens > 0
    citations = completion.model_extra["citations"]
    assert citations[0]["document_id"] == "photosynthesis" and citations[0]["tag"] == "[1]"


def test_openai_client_streams(server):
    _, client = server
    kwargs = dict(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=16,
        extra_body={"retrieval": False},
    )
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 16


def test_openai_client_errors(server):
    _, client = server
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-adapter", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="../etc", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=[], max_tokens=4)


PIRATE = TeachingProgram(
    instructions="You are a tutor who always talks like a pirate.",
    demonstrations=(
        Demonstration("What is 2 + 2?", "Ahoy, matey! Count two doubloons, then two more: how many be in yer chest?"),
        Demonstration("Why is the sea salty?", "Ahoy, matey! Rivers carry salt from the rocks: where does all that water end up?"),
        Demonstration("What is a noun?", "Ahoy, matey! A ship, a parrot, a map: what do all these words name?"),
    ),
)


def _reply(stub, **fields: object) -> str:
    request = _chat("What is the biggest planet?", retrieval=pb.RetrievalOptions(enabled=False), **fields)
    request.parameters.max_tokens = 12
    return stub.Chat(request).message.content


def test_a_program_changes_chat_replies_the_way_its_demonstrations_say(server, serve_store):
    """Served = scored: the stored program, and the same program inline (as optimizer trials and
    evaluations send it), answer identically, in the demonstrations' style; the default chat does not."""
    stub, _ = server
    ProgramRepository(serve_store).save(
        PIRATE, ProgramInfo(name="pirate", version="", optimizer="manual", dataset="", dataset_version="", adapter="")
    )
    plain = _reply(stub)
    stored = _reply(stub, program="pirate")
    inline = _reply(stub, inline_program=program_to_proto(PIRATE))
    assert stored.startswith("Ahoy"), stored
    assert "Ahoy" not in plain, plain
    assert inline == stored
    assert _reply(stub, program="pirate@v1") == stored


def test_a_program_caps_replies_at_the_length_it_was_scored_with(server):
    """A program's lm.max_tokens is part of what was scored: chat answers with at most that many tokens."""
    stub, _ = server
    short = replace(PIRATE, lm=LmSettings(max_tokens=3))
    request = _chat(inline_program=program_to_proto(short))
    assert stub.Chat(request).summary.usage.completion_tokens <= 3
    assert stub.Chat(_chat(inline_program=program_to_proto(PIRATE))).summary.usage.completion_tokens > 3


def test_a_program_answers_with_the_frequency_penalty_it_was_scored_with(server):
    """A program's lm.frequency_penalty is part of what was scored: chat applies it unless the request
    sets its own, and the reply is the one a plain request with that penalty gets."""
    stub, _ = server
    # Greedy, this program lists "Fish", "Bird", "Fish", "Bird", ... to the end.
    program = TeachingProgram(instructions="You are a friendly tutor.")

    def reply(program: TeachingProgram, **parameters: float) -> str:
        request = _chat("List some animals.", retrieval=pb.RetrievalOptions(enabled=False), inline_program=program_to_proto(program))
        request.parameters.MergeFrom(pb.GenerationParameters(max_tokens=32, **parameters))
        return stub.Chat(request).message.content

    penalized = replace(program, lm=LmSettings(frequency_penalty=1.5))
    scored = reply(penalized)
    assert scored != reply(program)
    assert scored == reply(program, frequency_penalty=1.5)
    # The request's own penalty wins over the program's.
    assert reply(penalized, frequency_penalty=0.5) == reply(program, frequency_penalty=0.5) != scored


def test_programs_for_another_base_model_and_ambiguous_requests_are_refused(server):
    stub, _ = server
    foreign = TeachingProgram(instructions="Be brief.", base_model="some-other-model")
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(_chat(inline_program=program_to_proto(foreign)))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "base model" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(_chat(program="pirate", inline_program=program_to_proto(PIRATE)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "inline_program" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(_chat(inline_program=pb.TeachingProgram(instructions="")))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "instructions" in caught.value.details()


def test_default_chat_retrieval_cites_the_material_and_says_when_it_has_nothing(server):
    """Retrieval on with nothing else set takes the calibrated chat defaults (inference.chat_*)."""
    stub, _ = server
    grounded = stub.Chat(_chat(retrieval=pb.RetrievalOptions(enabled=True)))
    assert grounded.citations and grounded.citations[0].document_id == "photosynthesis"
    assert not grounded.message.content.startswith(NO_MATERIAL_NOTICE)
    stray = stub.Chat(_chat("Who won the football world cup in 1998?", retrieval=pb.RetrievalOptions(enabled=True)))
    assert not stray.citations and stray.message.content.startswith(NO_MATERIAL_NOTICE)
    events = list(stub.ChatStream(pb.ChatStreamRequest(
        messages=[common_pb2.ChatMessage(role="user", content="Who won the football world cup in 1998?")],
        parameters=pb.GenerationParameters(max_tokens=4), retrieval=pb.RetrievalOptions(enabled=True),
    )))
    assert events[0].token.text == NO_MATERIAL_NOTICE
