"""The API contracts: generated code is fresh, and every element is documented."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "proto"))
import generate  # noqa: E402  (proto/generate.py, the one generator `make proto` runs)


def _tree(path: Path) -> dict[str, Path]:
    return {
        p.relative_to(path).as_posix(): p
        for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".pyi", ".typed")
    }


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    generate.generate(tmp_path)
    committed = _tree(ROOT / "proto" / "gen" / "python")
    fresh = _tree(tmp_path)
    assert sorted(fresh) == sorted(committed), "run `make proto`: generated files differ"
    stale = [
        name
        for name, path in fresh.items()
        if not filecmp.cmp(path, committed[name], shallow=False)
    ]
    assert not stale, f"run `make proto`: stale generated files {stale}"


def _descriptor_set(tmp_path: Path) -> descriptor_pb2.FileDescriptorSet:
    out = tmp_path / "api.pb"
    args = [
        "protoc",
        f"-I{generate.PROTO_ROOT}",
        f"-I{generate._googleapis_include()}",
        f"-I{generate.resources.files('grpc_tools') / '_proto'}",
        "--include_source_info",
        f"--descriptor_set_out={out}",
        *generate.proto_files(),
    ]
    assert protoc.main(args) == 0
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(out.read_bytes())
    return fds


def _undocumented(file: descriptor_pb2.FileDescriptorProto) -> list[str]:
    """Paths of elements without a leading comment (see descriptor.proto's SourceCodeInfo)."""
    commented = {
        tuple(loc.path) for loc in file.source_code_info.location if loc.leading_comments.strip()
    }
    missing: list[str] = []

    def check(path: tuple[int, ...], label: str) -> None:
        if path not in commented:
            missing.append(f"{file.name}: {label}")

    def message(msg, path, prefix):
        check(path, prefix + msg.name)
        for i, f in enumerate(msg.field):
            check((*path, 2, i), f"{prefix}{msg.name}.{f.name}")
        synthetic = {f.oneof_index for f in msg.field if f.proto3_optional}
        for i, o in enumerate(msg.oneof_decl):
            if i not in synthetic:  # `optional` fields get a generated oneof with no source
                check((*path, 8, i), f"{prefix}{msg.name}.{o.name} (oneof)")
        for i, nested in enumerate(msg.nested_type):
            if not nested.options.map_entry:
                message(nested, (*path, 3, i), f"{prefix}{msg.name}.")
        for i, e in enumerate(msg.enum_type):
            enum(e, (*path, 4, i), f"{prefix}{msg.name}.")

    def enum(e, path, prefix):
        check(path, prefix + e.name)
        for i, v in enumerate(e.value):
            check((*path, 2, i), f"{prefix}{e.name}.{v.name}")

    for i, m in enumerate(file.message_type):
        message(m, (4, i), "")
    for i, e in enumerate(file.enum_type):
        enum(e, (5, i), "")
    for i, s in enumerate(file.service):
        check((6, i), s.name)
        for j, method in enumerate(s.method):
            check((6, i, 2, j), f"{s.name}.{method.name}")
    return missing


def test_every_element_is_commented(tmp_path: Path) -> None:
    files = [f for f in _descriptor_set(tmp_path).file if f.name.startswith("danlu/")]
    assert len(files) >= 3
    missing = [m for f in files for m in _undocumented(f)]
    assert not missing, "undocumented proto elements:\n" + "\n".join(missing)


@pytest.mark.parametrize("package_dir", sorted((ROOT / "proto" / "danlu").glob("*/v*")))
def test_directory_matches_package(package_dir: Path) -> None:
    expected = "package " + ".".join(package_dir.relative_to(ROOT / "proto").parts) + ";"
    for proto in package_dir.glob("*.proto"):
        assert expected in proto.read_text(), f"{proto} must declare `{expected}`"


def test_enums_start_unspecified(tmp_path: Path) -> None:
    for file in _descriptor_set(tmp_path).file:
        if not file.name.startswith("danlu/"):
            continue
        enums = list(file.enum_type) + [e for m in file.message_type for e in m.enum_type]
        for e in enums:
            assert e.value[0].number == 0 and e.value[0].name.endswith("_UNSPECIFIED"), e.name


def test_generate_script_runs_standalone(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), str(tmp_path)], capture_output=True
    )
    assert result.returncode == 0, result.stderr.decode()
