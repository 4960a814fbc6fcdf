"""Bad optimizer, budget, judge and promotion requests get a clear status up front; nothing is stored."""

from __future__ import annotations

import grpc
import pytest
from optimization_helpers import store_starter

from tutorforge.artifacts.programs import ProgramInfo, ProgramRepository, TeachingProgram
from tutorforge.v1 import common_pb2, inference_pb2, inference_pb2_grpc, optimization_pb2_grpc
from tutorforge.v1 import optimization_pb2 as pb

# Nothing listens on the discard port: connections are refused at once.
UNREACHABLE = "http://127.0.0.1:9/v1"
SMOL = "SmolLM2-135M-Instruct"


def _status(call, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call(request)
    return raised.value.code(), raised.value.details()


def test_unknown_optimizer_bad_budgets_and_unreachable_lms_are_refused_before_a_run(serve):
    running, channel = serve(
        "optimization",
        "datasets",
        optimization__judge_endpoint__url=UNREACHABLE,
        optimization__reflection_endpoint__url=UNREACHABLE,
    )
    store = running.runtime.store
    store_starter(store)
    start = optimization_pb2_grpc.OptimizationServiceStub(channel).StartOptimization
    ok = {"name": "tutor", "dataset": "starter"}

    code, details = _status(start, pb.StartOptimizationRequest(**ok, optimizer=99))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "optimizer 99" in details
    negative = pb.OptimizerBudget(max_lm_calls=-5)
    code, details = _status(start, pb.StartOptimizationRequest(**ok, budget=negative))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "max_lm_calls" in details
    code, details = _status(
        start, pb.StartOptimizationRequest(**ok, budget=pb.OptimizerBudget(max_lm_tokens=10**13))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "ceilings" in details and "max_lm_tokens" in details
    code, details = _status(start, pb.StartOptimizationRequest(**ok, frequency_penalties=[0.5, 3.0]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "frequency_penalties: 3.0 is out of range" in details
    code, details = _status(start, pb.StartOptimizationRequest(**ok, frequency_penalties=[0, 0.5, 1, 1.5, 2]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "frequency_penalties has 5 values" in details
    code, details = _status(start, pb.StartOptimizationRequest(**ok, metric=pb.METRIC_JUDGE))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"judge LM at {UNREACHABLE} is unreachable" in details and "judge_endpoint" in details
    code, details = _status(start, pb.StartOptimizationRequest(**ok, optimizer=pb.OPTIMIZER_MIPRO_V2))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"reflection LM at {UNREACHABLE} is unreachable" in details and "reflection_endpoint" in details
    assert store.list("jobs") == [] and store.list("programs") == []


def test_a_judge_on_an_inference_service_that_is_not_there_is_refused(serve):
    # This server hosts no inference service, and no other address is configured for it.
    running, channel = serve("optimization", "datasets")
    store_starter(running.runtime.store)
    start = optimization_pb2_grpc.OptimizationServiceStub(channel).StartOptimization
    judged = pb.StartOptimizationRequest(name="t", dataset="starter", metric=pb.METRIC_JUDGE)
    code, details = _status(start, judged)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "judge LM at the inference service (base) is unreachable" in details
    code, details = _status(
        start,
        pb.StartOptimizationRequest(
            name="t", dataset="starter", optimizer=pb.OPTIMIZER_SIMBA, reflection_adapter="x"
        ),
    )
    assert code == grpc.StatusCode.NOT_FOUND and "x" in details
    assert running.runtime.store.list("jobs") == []


def test_promote_program_over_grpc(serve):
    running, channel = serve("optimization", "inference")
    repo = ProgramRepository(running.runtime.store)
    stub = optimization_pb2_grpc.OptimizationServiceStub(channel)
    program = TeachingProgram("Ask one guiding question.", base_model=SMOL)
    for mean in (0.4, 0.5):
        info = ProgramInfo("tutor", "", "bootstrap-fewshot", "starter", "1", "", base_model=SMOL)
        info.benchmark = {"pedagogical_score": {"mean": mean, "low": mean - 0.1, "high": mean + 0.1}}
        repo.save(program, info)
    other = TeachingProgram("Ask one guiding question.", base_model="Qwen3-8B")
    repo.save(other, ProgramInfo("tutor", "", "simba", "starter", "1", "", base_model="Qwen3-8B"))

    promoted = stub.PromoteProgram(pb.PromoteProgramRequest(program="tutor@v1", force=True))
    assert (promoted.program.version, promoted.previous_version, promoted.reason) == ("v1", "v3", "forced")
    promoted = stub.PromoteProgram(pb.PromoteProgramRequest(program="tutor@v2"))
    assert promoted.program.version == "v2" and promoted.reason == "benchmark 0.500 > 0.400 (v1)"
    code, details = _status(stub.PromoteProgram, pb.PromoteProgramRequest(program="tutor@v1"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "--force" in details
    code, details = _status(stub.PromoteProgram, pb.PromoteProgramRequest(program="tutor@v3", force=True))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "base model 'Qwen3-8B'" in details
    code, details = _status(stub.PromoteProgram, pb.PromoteProgramRequest(program="ghost"))
    assert code == grpc.StatusCode.NOT_FOUND
    assert repo.served_version("tutor") == "v2"
    # Chat refuses it too, when named explicitly.
    chat = inference_pb2_grpc.InferenceServiceStub(channel).Chat
    turn = [common_pb2.ChatMessage(role="user", content="Why is the sky blue?")]
    code, details = _status(chat, inference_pb2.ChatRequest(
            messages=turn, program="tutor@v3", parameters=inference_pb2.GenerationParameters(max_tokens=4)
        ),)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "compiled for base model 'Qwen3-8B'" in details
