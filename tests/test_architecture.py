"""The layering rule of ARCHITECTURE.md, checked on the source: a service package imports only itself and
the shared layers (core, artifacts, the client SDK, the generated stubs, the packaged samples), never
another service — services meet through protos and artifacts. Read with `ast`, so imports inside
functions and `importlib.import_module("tutorforge....")` count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "services" / "tutorforge"
SERVICES = ("retrieval", "datasets", "training", "optimization", "inference")
SHARED = {"core", "artifacts", "client", "v1", "samples"}
# The HTTP door serves the web console, which sits above the services and talks to them over gRPC.
EXTRA = {"inference": {"console"}}


def _module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imported(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in a module, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module_parts = _module_name(path)
    package = module_parts if path.name == "__init__.py" else module_parts[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from tutorforge import datasets` imports the package named after `import`.
            if module == "tutorforge":
                found += [(node.lineno, f"tutorforge.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _violations(service: str) -> list[str]:
    allowed = {service} | SHARED | EXTRA.get(service, set())
    bad = []
    for path in sorted((PACKAGE / service).rglob("*.py")):
        for line, module in _imported(path):
            parts = module.split(".")
            if parts[0] == "tutorforge" and len(parts) > 1 and parts[1] not in allowed:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("service", SERVICES)
def test_service_imports_no_other_service(service):
    assert (PACKAGE / service).is_dir()
    assert _violations(service) == []


def test_deploy_stands_beside_the_services():
    # The cluster rollout reads the artifact store and talks to Kubernetes and model servers, never to a
    # service; and no service imports it (the rule above allows services only the shared layers).
    assert (PACKAGE / "deploy").is_dir()
    assert _violations("deploy") == []


def test_the_check_sees_every_kind_of_import(tmp_path, monkeypatch):
    # A rule that cannot fail proves nothing: plant each kind of forbidden import and see it caught.
    fake = tmp_path / "tutorforge"
    (fake / "training").mkdir(parents=True)
    (fake / "training" / "__init__.py").write_text("")
    (fake / "training" / "bad.py").write_text(
        "import tutorforge.inference.chat\n"
        "from tutorforge.datasets import builder\n"
        "from tutorforge import optimization\n"
        "from ..retrieval import store\n"
        "from . import config\n"
        "from tutorforge.core import errors\n"
        "def late():\n"
        "    import importlib\n"
        "    from tutorforge.pipeline import stages\n"
        "    return importlib.import_module('tutorforge.optimization.runs')\n"
    )
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    found = sorted(entry.split(" imports ")[1] for entry in _violations("training"))
    assert found == [
        "tutorforge.datasets",
        "tutorforge.inference.chat",
        "tutorforge.optimization",
        "tutorforge.optimization.runs",
        "tutorforge.pipeline",
        "tutorforge.retrieval",
    ]
