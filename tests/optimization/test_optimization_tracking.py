"""An optimization run tracked in MLflow: parameters, the reported scores by step, the compiled program as
an artifact, and the run's link in the run's labels — read back with MLflow's own client."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient
from optimization_helpers import store_starter, wait_for
from tutorforge.core.telemetry.experiments import tracking_uri
from tutorforge.v1 import common_pb2, optimization_pb2_grpc
from tutorforge.v1 import optimization_pb2 as pb


@pytest.mark.slow
def test_an_optimization_run_is_tracked_in_mlflow(serve, tmp_path):
    running, channel = serve("optimization", "inference", "datasets")
    store_starter(running.runtime.store)
    stub = optimization_pb2_grpc.OptimizationServiceStub(channel)
    started = stub.StartOptimization(
        pb.StartOptimizationRequest(
            name="tracked",
            dataset="starter",
            optimizer=pb.OPTIMIZER_LABELED_FEW_SHOT,
            budget=pb.OptimizerBudget(max_labeled_demos=2, max_train_examples=4, max_validation_examples=2),
            max_tokens=16,
            use_retrieval=False,
        )
    ).job
    run, _ = wait_for(stub, started.id)
    assert run.state == common_pb2.JOB_STATE_SUCCEEDED, run.error

    uri = tracking_uri(running.runtime.settings, running.runtime.store)
    assert run.labels["mlflow_tracking_uri"] == uri
    run_id = run.labels["mlflow_run"].removeprefix("runs:/")
    client = MlflowClient(tracking_uri=uri)
    tracked = client.get_run(run_id)
    assert tracked.info.status == "FINISHED"
    assert client.get_experiment(tracked.info.experiment_id).name == "tutorforge-optimization"
    assert tracked.data.params["dataset"] == "starter" and tracked.data.params["name"] == "tracked"
    assert tracked.data.metrics["optimized_score"] == pytest.approx(run.metrics["optimized_score"])
    assert tracked.data.metrics["lm_calls"] == run.metrics["lm_calls"] > 0
    folder = tmp_path / "artifacts"
    client.download_artifacts(run_id, "program.json", str(folder))
    program = json.loads((folder / "program.json").read_text())
    # The artifact is the program the run saved (with its demonstrations, or none when the compiled one
    # scored below the unoptimized program).
    assert program["format"] == "tutorforge.program/v1"
    assert program == running.runtime.store.read_json("programs/tracked/v1/program.json")
