"""Every DSPy optimizer end to end: the real model behind the real inference service, over gRPC, on tiny
train/validation sets with short replies. Each run must spend LM calls compiling (more than scoring the
baseline and the result takes), record validation scores and cost in the program's info, stream cost in
WatchJob, and save a program that loads.

`pytest -s` prints each run's minutes and LM calls (the numbers in docs/optimization.md)."""

from __future__ import annotations

import json
import time

import pytest
from optimization_helpers import store_starter

from tutorforge.artifacts.programs import ProgramRepository
from tutorforge.core.teaching import DEFAULT_SYSTEM_PROMPT
from tutorforge.v1 import common_pb2, jobs_pb2, optimization_pb2_grpc
from tutorforge.v1 import optimization_pb2 as pb

# Chat grounds every tutor turn on the retrieval service (an empty collection here).
SERVICES = ("optimization", "inference", "datasets", "retrieval")
VALIDATION = 4
# Tokens per tutor reply, and per reflection/instruction reply: enough for a sentence.
MAX_TOKENS = 24
REFLECTION_TOKENS = 64


def _optimize(serve, optimizer: int, budget: pb.OptimizerBudget, **request: object):
    running, channel = serve(*SERVICES, optimization__reflection_max_tokens=REFLECTION_TOKENS)
    store = running.runtime.store
    store_starter(store, validation=VALIDATION)
    stub = optimization_pb2_grpc.OptimizationServiceStub(channel)
    started = time.monotonic()
    run = stub.StartOptimization(
        pb.StartOptimizationRequest(
            name="tutor",
            dataset="starter",
            optimizer=optimizer,
            budget=budget,
            max_tokens=MAX_TOKENS,
            **request,
        )
    ).job
    responses = list(stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=run.id), timeout=1500))
    minutes = (time.monotonic() - started) / 60
    run = stub.GetJob(jobs_pb2.GetJobRequest(job_id=run.id)).job
    assert run.state == common_pb2.JOB_STATE_SUCCEEDED, run.error
    program = stub.GetProgram(pb.GetProgramRequest(name="tutor")).program
    validation = min(VALIDATION, budget.max_validation_examples or VALIDATION)
    # Scoring the baseline and the compiled program takes one call per validation turn each; the rest is
    # the optimizer's own work.
    compile_calls = program.lm_calls - 2 * validation
    print(
        f"\n{program.optimizer}: {minutes:.2f} min, {program.lm_calls} LM calls ({compile_calls} compiling), "
        f"{program.lm_tokens} tokens, validation {program.baseline_score:.3f} -> "
        f"{program.optimized_score:.3f}"
    )
    assert compile_calls > 0
    assert 0 <= program.baseline_score <= 1 and 0 < program.optimized_score <= 1
    info = store.read_json(f"programs/tutor/{program.version}/info.json")
    assert info["optimized_score"] == pytest.approx(program.optimized_score)
    assert info["lm_calls"] == program.lm_calls
    assert info["optimizer"] == program.optimizer and info["stopped_early"] == ""
    _, loaded = ProgramRepository(store).load(f"tutor@{program.version}")
    assert loaded.instructions.strip()
    # A compiled program scoring below the unoptimized one is never saved: the unoptimized one is instead.
    assert program.optimized_score >= program.baseline_score
    if any("saving the unoptimized program" in r.event.message for r in responses):
        assert not loaded.demonstrations and loaded.instructions == DEFAULT_SYSTEM_PROMPT
    # Every progress event carries the cost so far, and it only grows.
    costs = [r.event.metrics for r in responses if "lm_calls" in r.event.metrics]
    assert costs and costs[-1]["lm_calls"] == program.lm_calls and costs[-1]["elapsed_seconds"] > 0
    assert [c["lm_calls"] for c in costs] == sorted(c["lm_calls"] for c in costs)
    return program, loaded, json.loads(program.parameters_json)


@pytest.mark.slow
def test_bootstrap_fewshot_with_the_seed_defaults(serve):
    program, loaded, parameters = _optimize(
        serve,
        pb.OPTIMIZER_BOOTSTRAP_FEW_SHOT,
        pb.OptimizerBudget(max_train_examples=6, max_validation_examples=VALIDATION),
    )
    # The seed's defaults: 3 rounds (trials 0 → 3), 4 threads.
    assert parameters["budget"]["trials"] == 0 and parameters["budget"]["threads"] == 4
    # Bootstrapped demonstrations — unless they scored below the unoptimized program, which was kept instead.
    assert loaded.demonstrations or program.optimized_score == program.baseline_score


@pytest.mark.slow
def test_bootstrap_random_search(serve):
    program, loaded, _ = _optimize(
        serve,
        pb.OPTIMIZER_BOOTSTRAP_FEW_SHOT_WITH_RANDOM_SEARCH,
        pb.OptimizerBudget(candidates=1, max_train_examples=6, max_validation_examples=3),
    )
    assert program.optimizer == "bootstrap-random-search"


@pytest.mark.slow
def test_mipro_v2_light(serve):
    program, loaded, parameters = _optimize(
        serve,
        pb.OPTIMIZER_MIPRO_V2,
        pb.OptimizerBudget(max_train_examples=4, max_validation_examples=2),
    )
    assert parameters["budget"]["trials"] == 0  # auto="light"
    assert parameters["reflection_lm"] == "base"


@pytest.mark.slow
def test_gepa_reflects_with_the_platforms_own_model_by_default(serve):
    program, loaded, parameters = _optimize(
        serve,
        pb.OPTIMIZER_GEPA,
        pb.OptimizerBudget(trials=1, max_train_examples=4, max_validation_examples=3),
    )
    assert parameters["reflection_lm"] == "base"


@pytest.mark.slow
def test_simba(serve):
    program, loaded, parameters = _optimize(
        serve,
        pb.OPTIMIZER_SIMBA,
        pb.OptimizerBudget(trials=1, candidates=2, max_train_examples=4, max_validation_examples=3),
    )
    assert program.optimizer == "simba" and parameters["reflection_lm"] == "base"


@pytest.mark.slow
def test_a_run_stopped_by_its_call_budget_saves_the_best_program_so_far(serve):
    running, channel = serve(*SERVICES, optimization__reflection_max_tokens=REFLECTION_TOKENS)
    store = running.runtime.store
    store_starter(store, validation=VALIDATION)
    stub = optimization_pb2_grpc.OptimizationServiceStub(channel)
    run = stub.StartOptimization(
        pb.StartOptimizationRequest(
            name="capped",
            dataset="starter",
            optimizer=pb.OPTIMIZER_BOOTSTRAP_FEW_SHOT_WITH_RANDOM_SEARCH,
            budget=pb.OptimizerBudget(max_lm_calls=5, max_train_examples=6, max_validation_examples=2),
            max_tokens=MAX_TOKENS,
        )
    ).job
    responses = list(stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=run.id), timeout=1500))
    run = stub.GetJob(jobs_pb2.GetJobRequest(job_id=run.id)).job
    assert run.state == common_pb2.JOB_STATE_SUCCEEDED, run.error
    assert any("LM-call budget reached" in r.event.message for r in responses)
    info = store.read_json("programs/capped/v1/info.json")
    assert info["stopped_early"].startswith("LM-call budget reached")
    # Baseline (2) + at most the cap while compiling (5; in-flight calls are cancelled) + final scoring (2).
    assert info["lm_calls"] <= 2 + 5 + 2 and info["optimized_score"] > 0
    ProgramRepository(store).load("capped@v1")


@pytest.mark.slow
def test_the_llm_judge_metric_drives_a_run_on_the_platforms_own_model(serve):
    running, channel = serve(*SERVICES, optimization__judge_max_tokens=40)
    store = running.runtime.store
    store_starter(store, validation=VALIDATION)
    stub = optimization_pb2_grpc.OptimizationServiceStub(channel)
    started = time.monotonic()
    run = stub.StartOptimization(
        pb.StartOptimizationRequest(
            name="judged",
            dataset="starter",
            optimizer=pb.OPTIMIZER_BOOTSTRAP_FEW_SHOT,
            metric=pb.METRIC_JUDGE,
            budget=pb.OptimizerBudget(trials=1, max_train_examples=3, max_validation_examples=2),
            max_tokens=MAX_TOKENS,
        )
    ).job
    list(stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=run.id), timeout=1500))
    run = stub.GetJob(jobs_pb2.GetJobRequest(job_id=run.id)).job
    assert run.state == common_pb2.JOB_STATE_SUCCEEDED, run.error
    info = store.read_json("programs/judged/v1/info.json")
    print(
        f"\njudge metric: {(time.monotonic() - started) / 60:.2f} min, {info['lm_calls']} LM calls, "
        f"validation {info['baseline_score']:.3f} -> {info['optimized_score']:.3f}"
    )
    assert info["metric"] == "judge" and info["parameters"]["metric"] == "judge"
    # Each validation reply is judged (one more call each), and so is each reply bootstrapping tries.
    assert info["lm_calls"] > 2 * 2 * 2
    assert 0 <= info["baseline_score"] <= 1 and 0 <= info["optimized_score"] <= 1
