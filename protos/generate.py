"""Regenerate the committed gRPC stubs from protos/clipd_api/v1/clipd.proto.

Run `python protos/generate.py` after editing the .proto; `--check` exits 1 when the
committed stubs differ from what the .proto generates (the test suite runs that).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
PROTO = "clipd_api/v1/clipd.proto"
GENERATED = ("clipd_pb2.py", "clipd_pb2.pyi", "clipd_pb2_grpc.py")


def generate(out_dir: Path) -> None:
    """Write the stubs for PROTO under out_dir, mirroring the package path."""
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(PROTO_ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {PROTO}")


def stale_files() -> list[str]:
    """Names of committed stubs that differ from freshly generated ones."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "clipd_api" / "v1"
        committed = PROTO_ROOT / "clipd_api" / "v1"
        return [
            name
            for name in GENERATED
            if not (committed / name).exists()
            or not filecmp.cmp(fresh / name, committed / name, shallow=False)
        ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report stale stubs")
    if parser.parse_args().check:
        stale = stale_files()
        if stale:
            print(f"stale stubs: {', '.join(stale)}; run: python protos/generate.py")
            return 1
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for name in GENERATED:
            shutil.copy(
                Path(tmp) / "clipd_api" / "v1" / name, PROTO_ROOT / "clipd_api" / "v1" / name
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
