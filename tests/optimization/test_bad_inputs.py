"""Bad requests get a clear status before any work starts, and nothing stored is touched."""

from __future__ import annotations

import grpc
import pytest
from optimization_helpers import store_starter
from tutorforge.v1 import optimization_pb2 as pb
from tutorforge.v1 import optimization_pb2_grpc
from tutorforge.v1 import jobs_pb2


def _status(call, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call(request)
    return raised.value.code(), raised.value.details()


def test_bad_requests_are_refused_with_a_status_saying_what_to_fix(serve):
    running, channel = serve("optimization", "datasets")
    store = running.runtime.store
    store_starter(store)
    store_starter(store, name="no-validation", validation=0, version="0e")
    stub = optimization_pb2_grpc.OptimizationServiceStub(channel)
    start = stub.StartOptimization
    ok = {"name": "tutor", "dataset": "starter"}

    code, details = _status(start, pb.StartOptimizationRequest(name="tutor", dataset="nope"))
    assert code == grpc.StatusCode.NOT_FOUND and "tutorforge dataset build" in details
    code, details = _status(start, pb.StartOptimizationRequest(**ok, adapter="ghost"))
    assert code == grpc.StatusCode.NOT_FOUND and "ghost" in details
    zero = pb.MetricWeights(context_usage=0, pedagogical_elements=0, length_ratio=0)
    code, details = _status(start, pb.StartOptimizationRequest(**ok, weights=zero))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "sum to a positive number" in details
    code, details = _status(
        start, pb.StartOptimizationRequest(**ok, optimizer=pb.OPTIMIZER_GEPA, reflection_adapter="ghost")
    )
    assert code == grpc.StatusCode.NOT_FOUND and "ghost" in details
    code, details = _status(start, pb.StartOptimizationRequest(name="../x", dataset="starter"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "program name" in details
    code, details = _status(start, pb.StartOptimizationRequest(**ok, budget=pb.OptimizerBudget(trials=-1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT

    evaluate = stub.Evaluate
    base = [pb.EvaluationTarget(spec="base")]
    code, details = _status(evaluate, pb.EvaluateRequest(dataset="no-validation", targets=base))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "no validation examples" in details
    code, details = _status(evaluate, pb.EvaluateRequest(dataset="nope", targets=base))
    assert code == grpc.StatusCode.NOT_FOUND
    code, details = _status(
        evaluate, pb.EvaluateRequest(dataset="starter", targets=[pb.EvaluationTarget(spec="adapter:ghost")])
    )
    assert code == grpc.StatusCode.NOT_FOUND and "ghost" in details
    code, details = _status(
        evaluate, pb.EvaluateRequest(dataset="starter", targets=[pb.EvaluationTarget(spec="program:ghost")])
    )
    assert code == grpc.StatusCode.NOT_FOUND and "tutorforge programs list" in details
    code, details = _status(
        evaluate, pb.EvaluateRequest(dataset="starter", targets=[pb.EvaluationTarget(spec="model:x")])
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "program:NAME[@VERSION][+ADAPTER]" in details
    code, details = _status(evaluate, pb.EvaluateRequest(dataset="starter"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, details = _status(evaluate, pb.EvaluateRequest(dataset="starter", targets=base, weights=zero))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "sum to a positive number" in details

    code, _ = _status(stub.GetJob, jobs_pb2.GetJobRequest(job_id="opti-missing"))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = _status(stub.GetEvaluation, pb.GetEvaluationRequest(evaluation_id="eval-missing"))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = _status(stub.GetProgram, pb.GetProgramRequest(name="ghost"))
    assert code == grpc.StatusCode.NOT_FOUND
    # Nothing was started or stored by the refused calls.
    assert store.list("jobs") == [] and store.list("programs") == []
    assert stub.ListPrograms(pb.ListProgramsRequest()).programs == []


def test_programs_are_listed_by_name_in_keyset_pages(serve):
    """ListPrograms pages like every List RPC: each program once across pages, even when one is saved
    between pages; a page token that no page gave is refused naming page_token."""
    from tutorforge.artifacts.programs import ProgramInfo, ProgramRepository, TeachingProgram

    running, channel = serve("optimization")
    programs = ProgramRepository(running.runtime.store)

    def save(name: str) -> None:
        info = ProgramInfo(name=name, version="", optimizer="manual", dataset="", dataset_version="", adapter="")
        programs.save(TeachingProgram(instructions=f"You tutor as {name}."), info)

    for name in ("delta", "alpha", "charlie"):
        save(name)
    stub = optimization_pb2_grpc.OptimizationServiceStub(channel)
    first = stub.ListPrograms(pb.ListProgramsRequest(page_size=2))
    assert [p.name for p in first.programs] == ["alpha", "charlie"] and first.next_page_token == "charlie"
    save("bravo")  # sorts before the token: the next page neither repeats nor shifts
    second = stub.ListPrograms(pb.ListProgramsRequest(page_size=2, page_token=first.next_page_token))
    assert [p.name for p in second.programs] == ["delta"] and second.next_page_token == ""
    assert [p.name for p in stub.ListPrograms(pb.ListProgramsRequest()).programs] == ["alpha", "bravo", "charlie", "delta"]
    code, details = _status(stub.ListPrograms, pb.ListProgramsRequest(page_token="../etc"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in details
    code, details = _status(stub.ListPrograms, pb.ListProgramsRequest(page_size=-1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_size" in details
