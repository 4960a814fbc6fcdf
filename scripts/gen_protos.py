"""Generate the Python protobuf/gRPC stubs from protos/ into services/tutorforge/v1/.

    python scripts/gen_protos.py            # regenerate
    python scripts/gen_protos.py --out DIR  # generate elsewhere (the staleness test uses this)
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
DEFAULT_OUT = ROOT / "services"


def generate(out: Path) -> list[Path]:
    protos = sorted(PROTO_ROOT.glob("tutorforge/v1/*.proto"))
    well_known = resources.files("grpc_tools") / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    package = out / "tutorforge" / "v1"
    (package / "__init__.py").write_text('"""Generated protobuf and gRPC stubs (scripts/gen_protos.py). Do not edit."""\n')
    return sorted(package.glob("*.py*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    files = generate(parser.parse_args().out)
    print(f"generated {len(files)} files", file=sys.stderr)


if __name__ == "__main__":
    main()
