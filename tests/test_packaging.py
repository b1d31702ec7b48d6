"""What a team installs: two wheels (``make dist``), under names that belong to this project.

The client wheel is installed into a fresh virtualenv that cannot see the checkout, as a production service
would install it: it brings grpcio and protobuf and nothing heavy, and its ``reranker`` command and Python
API rank documents through the live stack with the scores the in-process model gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ara_reranker_client import __version__
from tools.arabic_text import QUERIES

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ["الرياض عاصمة المملكة العربية السعودية.", "القاهرة عاصمة مصر.", "الشاي الأخضر غني بمضادات الأكسدة."]
# Generic names that collide with other projects in one site-packages: no wheel of ours may install them.
FORBIDDEN_TOP_LEVEL = {"server", "client", "tools", "reranker", "tei", "tests", "bench", "deploy", "docs"}
HEAVY = {"torch", "transformers", "numpy", "tritonclient", "tokenizers", "aiohttp"}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    """The wheels `make dist` builds, built the same way into a temporary directory."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(ROOT / "client"), str(ROOT)], check=True, cwd=ROOT, timeout=300)
    found = {path.name.split("-")[0]: path for path in out.glob("*.whl")}
    assert set(found) == {"ara_reranker_client", "ara_reranker_service"}, sorted(found)
    return found


def top_level(wheel: Path) -> set[str]:
    """What a wheel puts at the top of site-packages (its .dist-info left out)."""
    with zipfile.ZipFile(wheel) as archive:
        return {name.split("/")[0].removesuffix(".py") for name in archive.namelist()} - {
            n.split("/")[0] for n in archive.namelist() if n.split("/")[0].endswith(".dist-info")}


def test_no_wheel_installs_a_generic_top_level_name(wheels):
    assert top_level(wheels["ara_reranker_client"]) == {"ara_reranker_client"}
    assert top_level(wheels["ara_reranker_service"]) == {"ara_reranker_server", "ara_reranker_model"}
    for wheel in wheels.values():
        assert not top_level(wheel) & FORBIDDEN_TOP_LEVEL


def test_the_client_wheel_declares_grpcio_and_protobuf_only(wheels):
    with zipfile.ZipFile(wheels["ara_reranker_client"]) as archive:
        metadata = next(archive.read(n).decode() for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        names = archive.namelist()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert sorted(r.split(">")[0].split("<")[0].split("=")[0] for r in requires) == ["grpcio", "protobuf"], requires
    assert all(">=" in r and "<" in r for r in requires), f"ranges, not pins: {requires}"
    assert "ara_reranker_client/v1/reranker_pb2.pyi" in names and "ara_reranker_client/py.typed" in names


def test_the_service_wheel_declares_its_runtime_with_ranges(wheels):
    with zipfile.ZipFile(wheels["ara_reranker_service"]) as archive:
        metadata = next(archive.read(n).decode() for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    base = [r for r in requires if "extra ==" not in r]
    assert {"ara-reranker-client", "grpcio", "tokenizers", "tritonclient[grpc]", "aiohttp"} <= {
        r.split(">")[0].split("<")[0].split("=")[0].strip() for r in base}
    assert not [r for r in base if "==" in r], f"pins belong to requirements files: {base}"
    assert not [r for r in base if r.startswith(("torch", "transformers"))], "the gateway needs no torch"


@pytest.fixture(scope="module")
def client_venv(wheels, tmp_path_factory) -> Path:
    """A fresh virtualenv holding the client wheel and what it declares, nothing of the checkout."""
    venv = tmp_path_factory.mktemp("client-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    result = subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                             str(wheels["ara_reranker_client"])], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return venv


def outside_the_checkout(tmp_path: Path) -> dict:
    """Run in ``tmp_path`` with no PYTHONPATH: only what the virtualenv installed is importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return {"cwd": tmp_path, "env": env, "capture_output": True, "text": True, "timeout": 120}


def test_the_installed_client_brings_nothing_heavy(client_venv, tmp_path):
    listed = subprocess.run([str(client_venv / "bin/python"), "-m", "pip", "list", "--format", "json"], **outside_the_checkout(tmp_path))
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert {"ara-reranker-client", "grpcio", "protobuf"} <= installed
    assert not HEAVY & installed, sorted(HEAVY & installed)


def test_the_installed_cli_and_api_rank_through_the_live_stack(client_venv, gateway, reference, tmp_path):
    run = outside_the_checkout(tmp_path)
    version = subprocess.run([str(client_venv / "bin/reranker"), "--version"], **run)
    assert version.returncode == 0 and version.stdout.strip() == f"reranker {__version__}", version.stdout + version.stderr

    cli = subprocess.run([str(client_venv / "bin/reranker"), "--target", gateway.target, "--json", "--raw-scores",
                          QUERIES[0], *DOCUMENTS], **run)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    by_cli = {row["index"]: row["score"] for row in json.loads(cli.stdout)}

    script = ("import json, sys\nfrom ara_reranker_client import RerankerClient\n"
              "import ara_reranker_client, os\nassert 'site-packages' in ara_reranker_client.__file__, ara_reranker_client.__file__\n"
              "with RerankerClient(sys.argv[1]) as c:\n"
              "    print(json.dumps([[r.index, r.logit] for r in c.rerank(sys.argv[2], sys.argv[3:])]))\n")
    api = subprocess.run([str(client_venv / "bin/python"), "-c", script, gateway.target, QUERIES[0], *DOCUMENTS], **run)
    assert api.returncode == 0, api.stdout + api.stderr
    by_api = dict(json.loads(api.stdout))

    expected = reference.logits(QUERIES[0], DOCUMENTS)
    for got in (by_cli, by_api):
        np.testing.assert_allclose([got[i] for i in range(len(DOCUMENTS))], expected, atol=1e-4, rtol=0)
