"""deploy/docker/ and deploy/compose/ checked offline: hadolint passes both Dockerfiles, their pins are the
project's, the gateway image carries everything the gateway imports and no torch, and the compose file
validates against the compose spec and wires the stack as the scrape config expects. No Docker daemon here:
the images are not built (docs/deployment.md says so).
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
from importlib.metadata import distribution, packages_distributions
from pathlib import Path

import pytest
import yaml

from ara_reranker_server.launcher.triton_launcher import trace_config
from ara_reranker_server.settings import Settings
from ara_reranker_server.tracing import OTEL_VARIABLES

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "deploy" / "docker"
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
BIN = Path(sys.executable).parent


def pins(path: Path) -> dict[str, str]:
    """name (lower case, extras dropped) -> pinned version, from a requirements file."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==")
            out[re.sub(r"\[.*\]", "", name).lower().replace("_", "-")] = version
    return out


@pytest.mark.parametrize("dockerfile", ["triton.Dockerfile", "gateway.Dockerfile"])
def test_hadolint_passes(dockerfile):
    result = subprocess.run([str(BIN / "hadolint"), str(DOCKER / dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM python:latest\nRUN pip install requests\n")
    result = subprocess.run([str(BIN / "hadolint"), str(tmp_path / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_images_are_pinned_and_run_as_non_root():
    triton = (DOCKER / "triton.Dockerfile").read_text()
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3$", triton, re.M)
    gateway = (DOCKER / "gateway.Dockerfile").read_text()
    assert len(re.findall(r"^FROM python:3\.\d+-slim", gateway, re.M)) == 2  # multi-stage
    for text in (triton, gateway):
        users = re.findall(r"^USER (\d+):(\d+)$", text, re.M)
        assert users and int(users[-1][0]) >= 1000, "the last USER must be a numeric non-root UID"
        assert ":latest" not in text


def test_image_pins_are_the_projects():
    project = pins(ROOT / "requirements.txt")
    for name in ("requirements-triton.txt", "requirements-gateway.txt"):
        for package, version in pins(DOCKER / name).items():
            wanted = project.get(package) or project.get(package.removesuffix("-gpu"))  # onnxruntime-gpu = onnxruntime
            assert wanted == version, f"{name}: {package}=={version}, requirements.txt has {wanted}"
    assert "torch" in pins(DOCKER / "requirements-triton.txt")
    assert not {"torch", "transformers"} & set(pins(DOCKER / "requirements-gateway.txt"))


MODEL_DIR = ROOT / "model_repository" / "ara_reranker" / "1"


def imported_modules(path: Path) -> set[str]:
    """Every absolute import of ``path``; ``from a import b`` gives both ``a`` and ``a.b`` (b may be a module)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return modules


def source_of(module: str, roots: list[Path]) -> Path | None:
    """The file of ``module`` under one of ``roots`` (a module or a package's __init__), or None."""
    for root in roots:
        base = root / module.replace(".", "/")
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.exists():
                return path
    return None


def follow_imports(files: list[Path], roots: list[Path]) -> tuple[set[str], set[str]]:
    """Follow the imports of ``files`` through the modules found under ``roots``: (the modules of ours
    reached, the other modules imported, standard library left out)."""
    ours, third_party = set(), set()
    todo = [m for f in files for m in imported_modules(f)]
    while todo:
        module = todo.pop()
        if module in ours:
            continue
        path = source_of(module, roots)
        if path is not None:
            ours.add(module)
            todo += imported_modules(path)
        elif source_of(top := module.split(".")[0], roots):
            continue  # a name imported from one of our modules, not a module
        elif top not in sys.stdlib_module_names and top != "__future__":
            third_party.add(module)
    return ours, third_party


def distribution_of(module: str) -> str:
    """The distribution that installs ``module``; for a namespace several share (google.*, opentelemetry.exporter.*),
    the one that holds its subpackage, as deep as it takes (google.protobuf: protobuf;
    opentelemetry.exporter.otlp.proto.http: opentelemetry-exporter-otlp-proto-http)."""
    parts = module.split(".")
    names = list(set(_installed_packages().get(parts[0], [parts[0]])))
    for depth in range(2, len(parts) + 1):
        if len(names) <= 1:
            break
        prefix = "/".join(parts[:depth]) + "/"
        names = [n for n in names if any(f.startswith(prefix) for f in _files_of(n))] or names
    assert len(set(names)) == 1, f"{module}: installed by {names}"
    return names[0].lower().replace("_", "-")


@functools.cache
def _installed_packages() -> dict[str, list[str]]:
    """Top-level package -> the distributions installing it (a scan of every installed distribution: once)."""
    return packages_distributions()


@functools.cache
def _files_of(name: str) -> tuple[str, ...]:
    """The files a distribution installed (its RECORD, read once)."""
    return tuple(str(f) for f in distribution(name).files or [])


SOURCES = [ROOT / "server", ROOT / "client"]  # where the packages of the two distributions lie


def copied(dockerfile: str) -> set[str]:
    """The paths the Dockerfile copies from the build context (any stage)."""
    return set(re.findall(r"^COPY (?!--from)(\S+) ", (DOCKER / dockerfile).read_text(), re.M))


def test_the_gateway_image_has_every_distribution_the_gateway_imports():
    """Follow the imports from the gateway through this project's packages; every third-party module must come
    from a distribution of requirements-gateway.txt (or the standard library)."""
    _, third_party = follow_imports([ROOT / "server/ara_reranker_server/gateway.py"], SOURCES)
    distributions = {distribution_of(module) for module in third_party}
    allowed = set(pins(DOCKER / "requirements-gateway.txt"))
    assert "tokenizers" in distributions and "tritonclient" in distributions
    assert distributions <= allowed, f"imported by the gateway but not in its image: {sorted(distributions - allowed)}"


def test_the_gateway_runs_on_the_two_distributions_its_image_installs():
    """The gateway imports its own package, the model facts and the client's stubs, never tools/ nor the launcher;
    its image installs the client and the service from their sources, and nothing else of the checkout."""
    ours, _ = follow_imports([ROOT / "server/ara_reranker_server/gateway.py"], SOURCES)
    tops = {m.split(".")[0] for m in ours}
    assert "ara_reranker_server.api.cohere" in ours and "ara_reranker_client.v1.reranker_pb2" in ours  # the walk reaches submodules
    assert {"ara_reranker_server.triton_scorer", "ara_reranker_server.triton_endpoint",
            "ara_reranker_server.endpoint_health"} <= ours  # the Triton client, in its three rooms
    assert tops == {"ara_reranker_server", "ara_reranker_model", "ara_reranker_client"}, sorted(ours)
    assert not any(m.startswith("ara_reranker_server.launcher") for m in ours)  # runtime and tooling live apart
    assert copied("gateway.Dockerfile") == {"deploy/docker/requirements-gateway.txt", "client", "pyproject.toml", "server"}
    ignore = (DOCKER / "gateway.Dockerfile.dockerignore").read_text().split()
    assert {"!client/ara_reranker_client/", "!server/ara_reranker_server/", "!server/ara_reranker_model/"} <= set(ignore)


def test_the_triton_model_imports_only_the_model_facts_its_image_copies():
    """model.py imports ara_reranker_model (its scorer, engines and batching, and the model facts), never
    the gateway; the Triton image copies that package and the model repository, not the gateway."""
    ours, third_party = follow_imports(sorted(MODEL_DIR.glob("*.py")), [MODEL_DIR, *SOURCES])
    tops = {m.split(".")[0] for m in ours} - {p.stem for p in MODEL_DIR.glob("*.py")}
    assert [p.name for p in MODEL_DIR.glob("*.py")] == ["model.py"]  # its compute is the package's scorer
    assert {"ara_reranker_model.scoring", "ara_reranker_model.engines", "ara_reranker_model.batching",
            "ara_reranker_model.limits", "ara_reranker_model.files"} <= ours
    assert tops == {"ara_reranker_model"}, sorted(ours)
    assert not {"grpc", "tritonclient"} & {m.split(".")[0] for m in third_party}  # the image has neither
    assert copied("triton.Dockerfile") >= {"server/ara_reranker_model", "model_repository"}
    assert not any(path.startswith(("server/ara_reranker_server", "client")) or path == "server" for path in copied("triton.Dockerfile"))


@pytest.mark.parametrize("dockerfile", ["triton.Dockerfile", "gateway.Dockerfile"])
def test_images_are_labelled_with_the_projects_version(dockerfile):
    from ara_reranker_server import __version__

    text = (DOCKER / dockerfile).read_text()
    assert f"ARG VERSION={__version__}\n" in text and 'org.opencontainers.image.version="${VERSION}"' in text
    image = "ara-reranker-" + dockerfile.split(".")[0]
    tags = re.findall(rf"image: {image}:(\S+)", COMPOSE.read_text())
    overlays = [path.read_text() for path in (ROOT / "deploy/k8s/overlays").glob("*/kustomization.yaml")]
    tags += [m for text in overlays for m in re.findall(rf"name: {image}\n\s+newName: \S+\n\s+newTag: \"([^\"]+)\"", text)]
    assert tags and set(tags) == {__version__}, tags


# ---------------------------------------------------------------- compose


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_validates_against_the_compose_spec():
    result = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_triton_on_a_gpu_or_on_cpu_with_enough_shared_memory():
    services = compose()["services"]
    gpu, cpu = services["triton"], services["triton-cpu"]
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "deploy" not in cpu and "--model-config-name=cpu" in cpu["command"]
    assert "triton" in cpu["networks"]["default"]["aliases"]  # the name prometheus.yml and the gateway use
    for triton in (gpu, cpu):
        assert re.fullmatch(r"\d+gb", triton["shm_size"]) and int(triton["shm_size"][:-2]) >= 1
        assert triton["command"][0] == "tritonserver"


def test_compose_serves_the_projects_monitoring_files_under_the_scrape_configs_names():
    services = compose()["services"]
    config = yaml.safe_load((ROOT / "deploy/monitoring/prometheus.yml").read_text())
    hosts = {t.split(":")[0] for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert hosts <= set(services) | {"triton"}
    volumes = services["prometheus"]["volumes"]
    assert "../monitoring/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes
    assert all(f"../monitoring/{f}:/etc/prometheus/{f}:ro" in volumes for f in config["rule_files"])
    grafana = services["grafana"]["volumes"]
    assert any(v.startswith("../monitoring/grafana-dashboard.json:") for v in grafana)
    datasource = yaml.safe_load((COMPOSE.parent / "grafana/datasources/prometheus.yaml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and datasource["type"] == "prometheus"


def test_compose_gateway_is_read_only_and_its_env_names_real_settings():
    gateway = compose()["services"]["reranker-gateway"]
    assert gateway["read_only"] is True
    env = {k: re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", str(v)) for k, v in gateway["environment"].items()}
    known = {env_var for _, env_var, _, _ in Settings.docs()} | set(OTEL_VARIABLES)
    assert set(env) <= known, sorted(set(env) - known)
    assert env["RERANKER_TRITON_ENDPOINTS"] == "dns:///triton:8001"
    Settings.from_env(env)


def test_compose_traces_the_gateway_and_triton_into_one_viewer():
    """Both export to the Jaeger service (OTLP/HTTP), Triton with the flags make run gives it for the same endpoint."""
    services = compose()["services"]
    default = lambda value: re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", str(value))  # noqa: E731
    endpoint = default(services["reranker-gateway"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint == "http://jaeger:4318" and "jaeger" in services
    assert "16686:16686" in services["jaeger"]["ports"]
    expected = [f"--trace-config={value}" for value in trace_config({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})]
    for name in ("triton", "triton-cpu"):
        assert [default(arg) for arg in services[name]["command"] if arg.startswith("--trace-config")] == expected
