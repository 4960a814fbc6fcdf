"""The optimization service end to end: the real model behind the real inference service, over gRPC."""

from __future__ import annotations

import json
import time

import grpc
import pytest
from optimization_helpers import store_starter, wait_for

from tutorforge.artifacts.programs import Demonstration, ProgramInfo, ProgramRepository, TeachingProgram
from tutorforge.core.teaching import DEFAULT_SYSTEM_PROMPT
from tutorforge.optimization.turns import benchmark_turns
from tutorforge.v1 import (
    common_pb2,
    inference_pb2,
    inference_pb2_grpc,
    jobs_pb2,
    optimization_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from tutorforge.v1 import optimization_pb2 as pb

SERVICES = ("optimization", "inference", "datasets")
MATERIAL = (
    "Opportunity cost is the value of the next best alternative you give up when you make a choice. "
    "A scholarship pays tuition, but studying still costs the wages you could have earned by working."
)


def _ingest(channel, material: str = MATERIAL) -> None:
    ingest = retrieval_pb2_grpc.RetrievalServiceStub(channel).IngestDocuments(
        iter(
            [
                retrieval_pb2.IngestDocumentsRequest(
                    document=retrieval_pb2.DocumentHeader(document_id="notes", filename="notes.txt")
                ),
                retrieval_pb2.IngestDocumentsRequest(content=material.encode()),
            ]
        )
    )
    assert ingest.results[0].chunks_written >= 1


def _few_shot_run(serve, budget: pb.OptimizerBudget, **options):
    """A LabeledFewShot run named "tutor" on the starter dataset, without retrieval, to its end."""
    running, channel = serve(*SERVICES)
    store_starter(running.runtime.store)
    stub = optimization_pb2_grpc.OptimizationServiceStub(channel)
    started = stub.StartOptimization(
        pb.StartOptimizationRequest(
            name="tutor",
            dataset="starter",
            optimizer=pb.OPTIMIZER_LABELED_FEW_SHOT,
            budget=budget,
            max_tokens=48,
            use_retrieval=False,
            **options,
        )
    ).job
    assert started.kind == "optimization" and started.labels["program"] == "tutor"
    run, events = wait_for(stub, started.id)
    assert run.state == common_pb2.JOB_STATE_SUCCEEDED, run.error
    return stub, run, events


@pytest.mark.slow
def test_few_shot_optimization_improves_the_validation_score(serve):
    budget = pb.OptimizerBudget(max_labeled_demos=3, max_train_examples=8, max_validation_examples=4)
    stub, run, events = _few_shot_run(serve, budget)
    assert run.result == "tutor@v1"
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert any("baseline score" in e.message and "best_score" in e.metrics for e in events)
    assert max(e.progress for e in events) == 1.0

    program = stub.GetProgram(pb.GetProgramRequest(name="tutor")).program
    # The demos in the prompt make the small model's replies more like the tutor's.
    assert program.optimized_score > program.baseline_score
    # LabeledFewShot calls no LM: the 8 calls are the baseline's and the compiled program's validation replies.
    assert program.lm_calls == 8 and program.lm_tokens > 0
    assert (program.dataset, program.optimizer) == ("starter", "labeled-fewshot")
    assert program.base_model and json.loads(program.parameters_json)["budget"]["max_labeled_demos"] == 3
    document = json.loads(stub.GetProgram(pb.GetProgramRequest(name="tutor", version="v1")).state_json)
    assert document["format"] == "tutorforge.program/v1" and len(document["demonstrations"]) == 3
    assert document["instructions"] == DEFAULT_SYSTEM_PROMPT and document["base_model"] == program.base_model
    assert [p.name for p in stub.ListPrograms(pb.ListProgramsRequest()).programs] == ["tutor"]


@pytest.mark.slow
def test_a_run_keeps_the_frequency_penalty_the_unoptimized_program_scores_best_with(serve):
    # One call at a time: greedy replies then do not depend on what they were batched with.
    budget = pb.OptimizerBudget(max_labeled_demos=2, max_train_examples=6, max_validation_examples=3, threads=1)
    stub, _, events = _few_shot_run(serve, budget, frequency_penalties=[0.0, 1.5])
    baseline = next(e.metrics["baseline_score"] for e in events if "baseline_score" in e.metrics)
    penalized = next(e.metrics["score_frequency_penalty_1.5"] for e in events if "score_frequency_penalty_1.5" in e.metrics)
    # The penalty reached the replies: greedy replies without it would score exactly the baseline.
    assert penalized != baseline
    chosen = 1.5 if penalized > baseline else 0.0
    assert any(f"decoding: frequency penalty {chosen:g}" in e.message for e in events)
    # 0 is the baseline itself: one extra scoring of the 3 validation turns, for 1.5.
    program = stub.GetProgram(pb.GetProgramRequest(name="tutor")).program
    assert program.lm_calls == 3 * 3
    document = json.loads(stub.GetProgram(pb.GetProgramRequest(name="tutor", version="v1")).state_json)
    assert document["lm"]["frequency_penalty"] == chosen
    assert json.loads(program.parameters_json)["frequency_penalties"] == [0.0, 1.5]


@pytest.mark.slow
def test_evaluate_scores_exactly_what_chat_serves_and_records_the_benchmark(serve):
    """Served = scored through Evaluate: each reply in the report is the reply chat gives for the same turn
    with the same program (greedy); benchmark scores land in the program's lineage."""
    running, channel = serve(*SERVICES, "retrieval", retrieval__chunk_size_tokens=64, retrieval__chunk_overlap_tokens=8)
    store = running.runtime.store
    _ingest(channel)
    ProgramRepository(store).save(
        TeachingProgram(
            instructions="You are a brief, Socratic tutor.",
            demonstrations=(Demonstration("What is a noun?", "What do the words 'dog', 'city' and 'idea' name?"),),
        ),
        ProgramInfo(name="brief", version="", optimizer="manual", dataset="", dataset_version="", adapter=""),
    )
    stub = optimization_pb2_grpc.OptimizationServiceStub(channel)
    targets = [pb.EvaluationTarget(spec="base"), pb.EvaluationTarget(spec="program:brief")]
    started = stub.Evaluate(
        # One turn at a time, like the chat calls below: batched rows differ from a lone row in float
        # rounding, which can flip a greedy token; the prompt is the same either way.
        pb.EvaluateRequest(evaluation_set="tutor-benchmark", targets=targets, max_examples=3, max_tokens=24, threads=1)
    ).job
    run, events = wait_for(stub, started.id)
    assert run.state == common_pb2.JOB_STATE_SUCCEEDED, run.error
    assert any(e.total_steps == 6 for e in events)
    response = stub.GetEvaluation(pb.GetEvaluationRequest(evaluation_id=run.result, include_files=True))
    report = response.report
    assert [t.target for t in report.targets] == ["base", "program:brief"]
    for target in report.targets:
        assert target.examples == 3 and target.errors == 0
        interval = target.intervals["pedagogical_score"]
        assert 0 <= interval.low <= target.pedagogical_score <= interval.high <= 1
        assert set(target.intervals) >= {"question_rate", "answer_reveal_rate", "citation_rate", "groundedness"}
    files = {f.path: f.content for f in response.files}
    assert set(files) == {"report.json", "report.md", "charts/scores_per_target.png", "charts/score_per_subject.png"}
    assert files["charts/scores_per_target.png"].startswith(b"\x89PNG") and "| program:brief |" in files["report.md"].decode()
    examples = json.loads(files["report.json"])["examples"]

    chat = inference_pb2_grpc.InferenceServiceStub(channel)
    turns = benchmark_turns(limit=3)
    for spec, program in (("base", ""), ("program:brief", "brief")):
        for turn, scored in zip(turns, examples[spec], strict=True):
            served = chat.Chat(
                inference_pb2.ChatRequest(
                    messages=[common_pb2.ChatMessage(**m) for m in turn.messages],
                    program=program,
                    parameters=inference_pb2.GenerationParameters(max_tokens=24),
                    retrieval=inference_pb2.RetrievalOptions(enabled=True),
                )
            )
            assert served.message.content == scored["response"], (spec, turn.id)
            assert [c.tag for c in served.citations] == [c["tag"] for c in scored["citations"]]
    assert [e["response"] for e in examples["base"]] != [e["response"] for e in examples["program:brief"]]
    info = ProgramRepository(store).get("brief")
    assert info.benchmark["evaluation_id"] == run.result and info.benchmark["examples"] == 3
    assert 0 <= info.benchmark["pedagogical_score"]["low"] <= info.benchmark["pedagogical_score"]["high"]


def test_evaluation_bad_input_is_refused_up_front(serve):
    running, channel = serve(*SERVICES)
    store_starter(running.runtime.store)
    stub = optimization_pb2_grpc.OptimizationServiceStub(channel)
    cases = [
        (pb.EvaluateRequest(evaluation_set="nope", targets=[pb.EvaluationTarget(spec="base")]), "evaluation_set"),
        (pb.EvaluateRequest(targets=[pb.EvaluationTarget(spec="base")]), "evaluation_set"),
        (
            pb.EvaluateRequest(dataset="starter", evaluation_set="tutor-benchmark", targets=[pb.EvaluationTarget(spec="base")]),
            "exactly one",
        ),
        (pb.EvaluateRequest(evaluation_set="tutor-benchmark"), "targets"),
        (pb.EvaluateRequest(evaluation_set="tutor-benchmark", targets=[pb.EvaluationTarget(spec="gpt:x")]), "target"),
    ]
    for request, fragment in cases:
        with pytest.raises(grpc.RpcError) as caught:
            stub.Evaluate(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        stub.Evaluate(
            pb.EvaluateRequest(evaluation_set="tutor-benchmark", targets=[pb.EvaluationTarget(spec="program:ghost")])
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert running.runtime.store.list("evaluations") == []


def test_cancelling_a_run_stops_it_and_saves_nothing(serve):
    running, channel = serve(*SERVICES)
    store_starter(running.runtime.store)
    stub = optimization_pb2_grpc.OptimizationServiceStub(channel)
    started = stub.StartOptimization(
        pb.StartOptimizationRequest(
            name="cancelled",
            dataset="starter",
            optimizer=pb.OPTIMIZER_BOOTSTRAP_FEW_SHOT,
            max_tokens=32,
            budget=pb.OptimizerBudget(threads=1),
            use_retrieval=False,
        )
    ).job
    deadline = time.monotonic() + 300
    while stub.GetJob(jobs_pb2.GetJobRequest(job_id=started.id)).job.state != common_pb2.JOB_STATE_RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert stub.CancelJob(jobs_pb2.CancelJobRequest(job_id=started.id)).job.id == started.id
    run, events = wait_for(stub, started.id)
    assert run.state == common_pb2.JOB_STATE_CANCELLED
    assert events[-1].state == common_pb2.JOB_STATE_CANCELLED
    assert stub.ListPrograms(pb.ListProgramsRequest()).programs == []
    with pytest.raises(grpc.RpcError) as again:
        stub.CancelJob(jobs_pb2.CancelJobRequest(job_id=started.id))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_evaluation_with_retrieval_grounds_replies_on_ingested_material(serve):
    running, channel = serve(
        *SERVICES, "retrieval", retrieval__chunk_size_tokens=64, retrieval__chunk_overlap_tokens=8
    )
    store_starter(running.runtime.store)
    # About the first validation dialogue (an essay claiming social media causes teen depression).
    _ingest(channel, (
        "Correlation is not causation. If depressed teens use social media more, the depression may cause the "
        "social media use, or a third factor such as bullying or too little sleep may cause both."
    ))
    stub = optimization_pb2_grpc.OptimizationServiceStub(channel)
    started = stub.Evaluate(
        pb.EvaluateRequest(
            dataset="starter", targets=[pb.EvaluationTarget(spec="base")], max_tokens=8
        )
    ).job
    run, _ = wait_for(stub, started.id)
    assert run.state == common_pb2.JOB_STATE_SUCCEEDED, run.error
    report = stub.GetEvaluation(pb.GetEvaluationRequest(evaluation_id=run.result, include_files=True))
    files = {f.path: f.content for f in report.files}
    examples = json.loads(files["report.json"])["examples"]["base"]
    # Retrieval is on by default, as in chat: the essay turn was grounded on the ingested passage, and only it.
    grounded = [e for e in examples if e["citations"]]
    assert len(grounded) == 1 and "correlation" in grounded[0]["citations"][0]["text"].lower()


def test_benchmarking_an_adapter_records_its_scores_in_the_registry_lineage(serve, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    from tutorforge.artifacts.adapters import AdapterRegistry
    from tutorforge.core.models import chat_model_name, load_chat_model

    running, channel = serve(*SERVICES, "retrieval", retrieval__chunk_size_tokens=64, retrieval__chunk_overlap_tokens=8)
    settings = running.runtime.settings
    model = get_peft_model(
        load_chat_model(settings.models, dtype=torch.float32),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    model.save_pretrained(tmp_path / "tiny", safe_serialization=True)
    registry = AdapterRegistry(running.runtime.store)
    registry.register(tmp_path / "tiny", "tiny", chat_model_name(settings.models))
    _ingest(channel)
    stub = optimization_pb2_grpc.OptimizationServiceStub(channel)
    started = stub.Evaluate(
        pb.EvaluateRequest(
            evaluation_set="tutor-benchmark", targets=[pb.EvaluationTarget(spec="adapter:tiny")], max_examples=2, max_tokens=8
        )
    ).job
    run, _ = wait_for(stub, started.id)
    assert run.state == common_pb2.JOB_STATE_SUCCEEDED, run.error
    record = registry.get("tiny", "v1")
    assert record.lineage["benchmark"]["evaluation_id"] == run.result
    assert record.lineage["benchmark"]["examples"] == 2
    assert float(record.metadata["benchmark.question_rate.mean"]) >= 0
    assert "benchmark.pedagogical_score.low" in record.metadata
