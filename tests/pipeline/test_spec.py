"""Pipeline specs: a bad spec is refused before anything runs, naming the field to fix; the bundled sample
spec is valid; `tutorforge pipeline validate` says the same on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tutorforge import samples
from tutorforge.cli import app
from tutorforge.core.errors import InvalidArgument
from tutorforge.pipeline.spec import load_spec, parse_spec
from typer.testing import CliRunner

SAMPLE = samples.SAMPLES_DIR / "pipelines" / "math-tutor.yaml"
DATASET = {"name": "d", "sources": [{"file": str(samples.starter_dialogues())}]}


def test_the_sample_spec_is_valid_and_runs_every_stage() -> None:
    spec = load_spec(SAMPLE)
    assert all(getattr(spec, stage) for stage in ("material", "dataset", "train", "optimize", "evaluate", "publish"))
    seeds = spec.files(spec.dataset.sources[0].seeds.files, "files")
    assert [path.resolve() for path in seeds] == [samples.seeds_dir() / "mathematics.jsonl"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"train": {"adapter": "a"}}, r"^spec\.train: needs a dataset section"),
        ({"dataset": {"name": "Math Tutor"}}, r"^spec\.dataset\.name: 'Math Tutor' is not valid"),
        ({"dataset": {"name": "d", "sources": [{"file": "x.jsonl", "seeds": {}}]}}, r"^spec\.dataset\.sources\[0\]: give exactly one of"),
        ({"dataset": {"name": "d", "sources": [{"synthetic": {"conversations": 2}}]}}, r"^spec\.dataset\.sources\[0\]\.synthetic\.topic: Field required"),
        ({"dataset": {"name": "d", "sources": [{"file": "missing.jsonl"}]}}, r"^spec\.dataset\.sources\[0\]\.file\[0\]: .*missing\.jsonl does not exist"),
        ({"dataset": DATASET, "train": {"adapter": "a", "arguments": {"max_stepz": 3}}}, r"^spec\.train\.arguments: unknown TrainingArguments field\(s\) max_stepz"),
        ({"dataset": DATASET, "train": {"adapter": "a", "num_workers": -1}}, r"^spec\.train\.num_workers: Input should be greater than or equal to 0"),
        ({"dataset": DATASET, "optimize": {"program": "p", "optimizer": "magic"}}, r"^spec\.optimize\.optimizer: 'magic' is not one of labeled_few_shot"),
        ({"dataset": DATASET, "optimize": {"program": "p", "frequency_penalties": [0, 0.5, 1, 1.5, 2]}}, r"^spec\.optimize\.frequency_penalties: List should have at most 4 items"),
        ({"dataset": DATASET, "evaluate": {"targets": ["base", "adapter"]}}, r"^spec\.evaluate\.targets: 'adapter' names the adapter of the train section"),
        ({"dataset": DATASET, "publish": {"load_adapter": False}}, r"^spec\.publish\.promote_program: needs an optimize section"),
        ({"material": {}}, r"^spec\.material: give paths"),
        ({"materials": {"bundled": True}}, r"^spec\.materials: Extra inputs are not permitted"),
        (["material"], r"^spec: must be a YAML mapping"),
    ],
)
def test_a_bad_spec_names_the_field_to_fix(spec: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_spec(spec)


def test_relative_paths_are_read_from_the_specs_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("# Fractions\nA fraction names part of a whole.\n")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"material": {"paths": ["notes.md"], "category": "math"}}))
    spec = load_spec(tmp_path / "spec.yaml")
    assert spec.files(spec.material.paths, "material.paths") == [tmp_path / "notes.md"]


def test_validate_command(tmp_path: Path) -> None:
    runner = CliRunner()
    good = runner.invoke(app, ["pipeline", "validate", str(SAMPLE)])
    assert good.exit_code == 0 and "material → dataset → train → optimize → evaluate → publish" in good.output
    (tmp_path / "bad.yaml").write_text("dataset: {name: d}\ntrain: {adapter: a, arguments: {lr: 1}}\n")
    bad = runner.invoke(app, ["pipeline", "validate", str(tmp_path / "bad.yaml")])
    assert bad.exit_code == 2 and "spec.train.arguments: unknown TrainingArguments field(s) lr" in bad.output
    (tmp_path / "broken.yaml").write_text("dataset: [\n")
    broken = runner.invoke(app, ["pipeline", "validate", str(tmp_path / "broken.yaml")])
    assert broken.exit_code == 2 and "not valid YAML" in broken.output
