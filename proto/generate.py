"""Generate the Python API package from proto/ (run by `make proto`).

`python proto/generate.py [OUT_DIR]` writes messages, gRPC stubs and `.pyi` type stubs for
every `.proto` under proto/danlu into OUT_DIR (default: proto/gen/python). The freshness test
generates into a temporary directory and compares it with the committed copy.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_ROOT / "gen" / "python"


def _googleapis_include() -> str:
    """The directory holding google/api and google/rpc protos (googleapis-common-protos)."""
    from google.rpc import status_pb2

    return str(Path(status_pb2.__file__).resolve().parents[2])


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "danlu").rglob("*.proto"))


def generate(out_dir: Path = DEFAULT_OUT) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{_googleapis_include()}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *proto_files(),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Namespace packages need no __init__.py, but type checkers and setuptools like markers.
    for package_dir in (out_dir / "danlu").rglob("*"):
        if package_dir.is_dir():
            (package_dir / "__init__.py").touch()
    (out_dir / "danlu" / "__init__.py").touch()
    (out_dir / "danlu" / "py.typed").touch()


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
