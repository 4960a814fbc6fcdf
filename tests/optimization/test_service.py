"""The optimization service end to end: the real model behind the real inference service, over gRPC."""

from __future__ import annotations

import json
import time

import dspy
import grpc
import pytest
from optimization_helpers import store_starter, wait_for
from tutorforge.datasets.repository import DatasetRepository
from tutorforge.optimization.adapters import PlainAdapter
from tutorforge.optimization.lm import InferenceLM, LmUsage
from tutorforge.optimization.program import (
    ProgramInfo,
    ProgramRepository,
    TutorProgram,
    examples_from_records,
)
from tutorforge.v1 import (
    common_pb2,
    inference_pb2,
    inference_pb2_grpc,
    optimization_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from tutorforge.v1 import optimization_pb2 as pb

SERVICES = ("optimization", "inference", "datasets")


@pytest.mark.slow
def test_few_shot_optimization_improves_the_validation_score(serve):
    running, channel = serve(*SERVICES)
    store_starter(running.runtime.store)
    stub = optimization_pb2_grpc.OptimizationServiceStub(channel)
    started = stub.StartOptimization(
        pb.StartOptimizationRequest(
            name="tutor",
            dataset="starter",
            optimizer=pb.OPTIMIZER_LABELED_FEW_SHOT,
            budget=pb.OptimizerBudget(max_labeled_demos=3, max_train_examples=8, max_validation_examples=4),
            max_tokens=48,
        )
    ).run
    assert started.kind == "optimization" and started.labels["program"] == "tutor"
    run, events = wait_for(stub, started.id)
    assert run.state == common_pb2.JOB_STATE_SUCCEEDED, run.error
    assert run.result == "tutor@v1"
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert any("baseline score" in e.message and "best_score" in e.metrics for e in events)
    assert max(e.progress for e in events) == 1.0

    program = stub.GetProgram(pb.GetProgramRequest(name="tutor")).program
    # The demos in the prompt make the small model's replies more like the tutor's.
    assert program.optimized_score > program.baseline_score
    assert program.lm_calls == 8 and program.lm_tokens > 0
    assert (program.dataset, program.optimizer, program.lm_adapter) == ("starter", "labeled-fewshot", "plain")
    assert json.loads(program.parameters_json)["budget"]["max_labeled_demos"] == 3
    state = json.loads(stub.GetProgram(pb.GetProgramRequest(name="tutor", version="v1")).state_json)
    assert len(state["respond"]["demos"]) == 3
    assert [p.name for p in stub.ListPrograms(pb.ListProgramsRequest()).programs] == ["tutor"]


@pytest.mark.slow
def test_round_trip_two_target_evaluation_and_chat_with_a_program(serve, tmp_path):
    running, channel = serve(*SERVICES)
    store = running.runtime.store
    store_starter(store)
    records = DatasetRepository(store).records("starter", "", "train")
    program = dspy.LabeledFewShot(k=2).compile(TutorProgram(), trainset=examples_from_records(records))
    validation = examples_from_records(DatasetRepository(store).records("starter", "", "validation"))
    example = validation[0]

    # Save / load round trip: the loaded program answers exactly like the compiled one (greedy).
    usage = LmUsage()
    lm = InferenceLM(channel, max_tokens=24, usage=usage)

    def reply(module: TutorProgram) -> str:
        with dspy.context(lm=lm, adapter=PlainAdapter()):
            return module(**example.inputs()).response

    before = reply(program)
    info = ProgramRepository(store).save(
        program,
        ProgramInfo("fewshot", "", "labeled-fewshot", "starter", "5a17e7", "", "plain", False, 0, 0, 0, 0),
    )
    _, loaded = ProgramRepository(store).load("fewshot", info.version)
    assert reply(loaded) == before and before
    assert usage.calls == 2 and usage.completion_tokens > 0

    # Evaluation of two targets on the validation split.
    stub = optimization_pb2_grpc.OptimizationServiceStub(channel)
    targets = [pb.EvaluationTarget(spec="base"), pb.EvaluationTarget(spec="program:fewshot")]
    started = stub.Evaluate(
        pb.EvaluateRequest(dataset="starter", targets=targets, max_examples=2, max_tokens=24)
    ).run
    assert started.kind == "evaluation"
    run, events = wait_for(stub, started.id)
    assert run.state == common_pb2.JOB_STATE_SUCCEEDED, run.error
    assert run.result == started.id and any(e.total_steps == 4 for e in events)
    response = stub.GetEvaluation(pb.GetEvaluationRequest(evaluation_id=run.result, include_files=True))
    report = response.report
    assert [t.target for t in report.targets] == ["base", "program:fewshot"]
    for target in report.targets:
        assert target.examples == 2 and target.errors == 0
        assert 0 <= target.pedagogical_score <= 1 and 0 <= target.context_usage <= 1
        assert 0 <= target.similarity.min <= target.similarity.mean <= target.similarity.max <= 1
        assert target.similarity.max > 0 and target.mean_latency_seconds > 0
        assert set(target.score_per_subject) == {e.subject for e in validation[:2]}
    files = {f.path: f.content for f in response.files}
    assert set(files) == {
        "report.json",
        "report.md",
        "charts/scores_per_target.png",
        "charts/score_per_subject.png",
    }
    assert files["charts/scores_per_target.png"].startswith(b"\x89PNG")
    assert "| program:fewshot |" in files["report.md"].decode()
    assert json.loads(files["report.json"])["examples"]["base"][0]["response"]
    assert store.exists(report.report_markdown_path) and len(report.chart_paths) == 2

    # The inference service's chat answers with the named program.
    chat = inference_pb2_grpc.InferenceServiceStub(channel)
    turn = [common_pb2.ChatMessage(role="user", content=example.query)]
    answered = chat.Chat(
        inference_pb2.ChatRequest(
            messages=turn, program="fewshot", parameters=inference_pb2.GenerationParameters(max_tokens=16)
        )
    )
    assert answered.message.content
    with pytest.raises(grpc.RpcError) as missing:
        chat.Chat(inference_pb2.ChatRequest(messages=turn, program="ghost"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


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
        )
    ).run
    deadline = time.monotonic() + 300
    while stub.GetRun(pb.GetRunRequest(run_id=started.id)).run.state != common_pb2.JOB_STATE_RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert stub.CancelRun(pb.CancelRunRequest(run_id=started.id)).run.id == started.id
    run, events = wait_for(stub, started.id)
    assert run.state == common_pb2.JOB_STATE_CANCELLED
    assert events[-1].state == common_pb2.JOB_STATE_CANCELLED
    assert stub.ListPrograms(pb.ListProgramsRequest()).programs == []
    with pytest.raises(grpc.RpcError) as again:
        stub.CancelRun(pb.CancelRunRequest(run_id=started.id))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_evaluation_with_retrieval_grounds_examples_on_ingested_material(serve):
    running, channel = serve(
        *SERVICES, "retrieval", retrieval__chunk_size_tokens=64, retrieval__chunk_overlap_tokens=8
    )
    store_starter(running.runtime.store)
    material = (
        "Opportunity cost is the value of the next best alternative you give up when you make a choice. "
        "A scholarship pays tuition, but studying still costs the wages you could have earned by working."
    )
    ingest = retrieval_pb2_grpc.RetrievalServiceStub(channel).IngestDocuments(
        iter(
            [
                retrieval_pb2.IngestDocumentsRequest(
                    document=retrieval_pb2.DocumentHeader(filename="costs.txt")
                ),
                retrieval_pb2.IngestDocumentsRequest(content=material.encode()),
            ]
        )
    )
    assert ingest.results[0].chunks_written >= 1
    stub = optimization_pb2_grpc.OptimizationServiceStub(channel)
    started = stub.Evaluate(
        pb.EvaluateRequest(
            dataset="starter",
            targets=[pb.EvaluationTarget(spec="base")],
            max_examples=1,
            max_tokens=8,
            use_retrieval=True,
        )
    ).run
    run, _ = wait_for(stub, started.id)
    assert run.state == common_pb2.JOB_STATE_SUCCEEDED, run.error
    report = stub.GetEvaluation(pb.GetEvaluationRequest(evaluation_id=run.result, include_files=True))
    files = {f.path: f.content for f in report.files}
    example = json.loads(files["report.json"])["examples"]["base"][0]
    # The program was given the ingested passage instead of the dataset's system turn.
    assert "opportunity cost" in example["context"].lower()
