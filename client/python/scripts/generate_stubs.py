"""Generates the gRPC stubs of the user-facing services from client/proto into
src/autoglm/v1 (messages, services, and their type stubs), or with --check
fails when the committed ones no longer match the proto files.

The versions of grpcio-tools and mypy-protobuf that made the committed files
are pinned in pyproject.toml's `dev` extra: other versions write other bytes.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent.parent
PROTO_ROOT = HERE.parent / "proto"
PACKAGE_DIR = HERE / "src" / "autoglm" / "v1"
# The agent's session is not for users: only replicas and agents speak it.
SERVICES = ["acl", "admin", "config", "scheduler"]


def generate(out: Path) -> list[Path]:
    """Writes the stubs under `out` (as autoglm/v1/...); returns their paths."""
    include = str(Path(protoc.__file__).parent / "_proto")
    # mypy-protobuf's plugins are installed beside this interpreter.
    plugins = Path(sys.executable).parent
    protos = [f"autoglm/v1/{name}.proto" for name in SERVICES]
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={plugins / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugins / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out / "autoglm" / "v1").glob("*_pb2*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        generated = generate(Path(temp))
        if args.check:
            committed = sorted(PACKAGE_DIR.glob("*_pb2*"))
            names = [p.name for p in generated]
            stale = [p.name for p in committed if p.name not in names]
            stale += [
                p.name
                for p in generated
                if not (PACKAGE_DIR / p.name).exists()
                or not filecmp.cmp(p, PACKAGE_DIR / p.name, shallow=False)
            ]
            if stale:
                print(
                    "stubs out of date with client/proto: "
                    + ", ".join(sorted(set(stale)))
                    + " (run client/python/scripts/generate_stubs.py)",
                    file=sys.stderr,
                )
                return 1
            return 0
        for old in PACKAGE_DIR.glob("*_pb2*"):
            old.unlink()
        for path in generated:
            shutil.copy(path, PACKAGE_DIR / path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
