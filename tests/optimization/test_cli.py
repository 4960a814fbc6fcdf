"""`tutorforge programs …`, `optimize` and `evaluate` through typer's CliRunner against a real server
(the calls here need no model)."""

from __future__ import annotations

import json

from optimization_helpers import store_starter
from typer.testing import CliRunner

from tutorforge.artifacts.programs import Demonstration, ProgramInfo, ProgramRepository, TeachingProgram
from tutorforge.cli import app

runner = CliRunner()


def test_programs_list_show_and_refused_runs(serve):
    running, _ = serve("optimization", "datasets")
    store = running.runtime.store
    store_starter(store)
    program = TeachingProgram(
        instructions="Ask one question at a time.",
        demonstrations=(Demonstration("Is 2/6 the same as 1/3?", "What if you cut each third in two?"),) * 2,
    )
    ProgramRepository(store).save(
        program,
        ProgramInfo(
            "tutor", "", "labeled-fewshot", "starter", "5a17e7", "",
            baseline_score=0.2, optimized_score=0.3, lm_calls=8, lm_tokens=900,
        ),
    )
    address = ["--address", running.address]

    listed = runner.invoke(app, ["programs", "list", "--json", *address])
    assert listed.exit_code == 0, listed.output
    programs = json.loads(listed.stdout)["programs"]
    assert [(p["name"], p["version"], p["lm_calls"]) for p in programs] == [("tutor", "v1", "8")]

    shown = runner.invoke(app, ["programs", "show", "tutor", "--state", "--json", *address])
    assert shown.exit_code == 0, shown.output
    assert len(json.loads(shown.stdout)["state"]["demonstrations"]) == 2
    table = runner.invoke(app, ["programs", "show", "tutor", *address])
    assert "0.200 → 0.300" in table.stdout

    missing = runner.invoke(app, ["optimize", "nope", "--name", "t", *address])
    assert missing.exit_code == 2 and "NOT_FOUND" in missing.output
    bad_target = runner.invoke(app, ["evaluate", "starter", "--target", "model:x", *address])
    assert bad_target.exit_code == 2 and "INVALID_ARGUMENT" in bad_target.output
    bad_set = runner.invoke(app, ["evaluate", "--set", "nope", "--target", "base", *address])
    assert bad_set.exit_code == 2 and "evaluation_set" in bad_set.output
    bad_weight = runner.invoke(
        app, ["evaluate", "starter", "--target", "base", "--weight", "nonsense=1", *address]
    )
    assert bad_weight.exit_code != 0 and "NAME=VALUE" in bad_weight.output
