"""The training CLI through typer's CliRunner against a real server (no Ray run: refused requests and
stored job records)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tutorforge.cli import app
from tutorforge.core.jobs import JobManager, JobState
from tutorforge.training.config import TrainingSpec

runner = CliRunner()


def test_train_refusals_exit_non_zero_with_the_servers_message(serve) -> None:
    running, _ = serve("training")
    unknown = runner.invoke(app, ["train", "nope", "--adapter-name", "x", "--address", running.address])
    assert unknown.exit_code == 2
    assert "NOT_FOUND" in unknown.output and "nope" in unknown.output
    bad = runner.invoke(
        app, ["train", "nope", "--adapter-name", "x", "--rank", "-1", "--address", running.address]
    )
    assert bad.exit_code == 2 and "lora.rank" in bad.output


def test_jobs_list_show_and_resume_refusal(serve, tmp_path) -> None:
    running, _ = serve("training")
    jobs = JobManager(running.runtime.store, "training")
    record = jobs.create(
        labels={"dataset": "starter", "adapter_name": "tutor"},
        parameters=TrainingSpec(dataset="starter", adapter_name="tutor").to_json(),
    )
    jobs.update(
        record.id,
        state=JobState.RUNNING,
        message="step 2/4 loss 1.9",
        step=2,
        total_steps=4,
        metrics={"loss": 1.9},
    )
    jobs.update(
        record.id, state=JobState.SUCCEEDED, message="done", result="tutor", labels={"adapter_version": "v1"}
    )

    listed = runner.invoke(app, ["jobs", "list", "--address", running.address])
    assert listed.exit_code == 0 and record.id in listed.stdout and "succeeded" in listed.stdout
    shown = runner.invoke(app, ["jobs", "show", record.id, "--json", "--address", running.address])
    assert shown.exit_code == 0
    data = json.loads(shown.stdout)
    assert (
        data["state"] == "JOB_STATE_SUCCEEDED"
        and data["result"] == "tutor"
        and data["metrics"]["loss"] == 1.9
    )
    watched = runner.invoke(app, ["jobs", "watch", record.id, "--address", running.address])
    assert watched.exit_code == 0 and "tutor@v1" in watched.stdout
    resumed = runner.invoke(app, ["jobs", "resume", record.id, "--address", running.address])
    assert resumed.exit_code == 2 and "FAILED_PRECONDITION" in resumed.output
    assert (
        runner.invoke(app, ["jobs", "show", "trai-000000000000", "--address", running.address]).exit_code == 2
    )
