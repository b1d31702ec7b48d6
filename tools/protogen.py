"""Generate the Python gRPC stubs (with .pyi type stubs) from proto/ into the top-level packages ``reranker``
and ``tei`` at the repository root (protoc's ``-I proto`` layout: ``reranker/v1/reranker_pb2.py`` imports
itself as ``reranker.v1``), so a checkout imports them with no install and no package remapping.

``python -m tools.protogen`` (``make proto``) regenerates them; ``--check`` fails when the committed
stubs differ from what the proto files generate now (a test runs it, so stale stubs fail CI).
Generated files are never edited by hand.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT_ROOT = ROOT
# reranker.v1 is this service's API; tei.v1 is text-embeddings-inference's (proto/tei/v1/NOTICE.md).
PROTOS = ["reranker/v1/reranker.proto", "tei/v1/tei.proto"]
PACKAGES = ["reranker", "reranker/v1", "tei", "tei/v1"]
STUBS = [f"{proto.rsplit('.', 1)[0]}{suffix}" for proto in PROTOS for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")]
# The (empty) package markers too: without them setuptools' package discovery would leave the stubs out.
GENERATED = STUBS + [f"{package}/__init__.py" for package in PACKAGES]


def generate(out: Path) -> None:
    """Run protoc (from grpcio-tools) over PROTOS into ``out``."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(PROTO_ROOT / p) for p in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for package in PACKAGES:
        (out / package / "__init__.py").touch()


def stale_files() -> list[str]:
    """Generated files that differ from (or are missing in) the checkout."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = []
        for name in GENERATED:
            fresh, committed = Path(tmp) / name, OUT_ROOT / name
            if not committed.exists() or not filecmp.cmp(fresh, committed, shallow=False):
                stale.append(str(committed.relative_to(ROOT)))
        return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed stubs are stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print("stale generated stubs (run `make proto`): " + ", ".join(stale), file=sys.stderr)
            return 1
        print("generated stubs are up to date")
        return 0
    generate(OUT_ROOT)
    print(f"generated {', '.join(GENERATED)} into {OUT_ROOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
