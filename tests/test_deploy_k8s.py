"""deploy/k8s/ checked offline: every overlay renders with `kubectl kustomize`, validates with
kubernetes-validate --strict at the oldest and newest Kubernetes supported, and the rendered objects say what
matters (GPU, shared memory, probes and their budget, shutdown timing, the headless Service and the gateway's
dns:/// target, selectors, images, non-root). No cluster is involved: nothing here is applied.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ara_reranker_model.limits import coupled_limit_problems
from ara_reranker_server import triton_config
from ara_reranker_server.launcher.triton_launcher import trace_config
from ara_reranker_server.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
MONITORING = ROOT / "deploy" / "monitoring"
OVERLAYS = ["cpu-dev", "gpu-prod"]
KUBERNETES_VERSIONS = ["1.30", "1.37"]  # lifecycle sleep (preStop) is on by default from 1.30
TRITON_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def render(overlay: str) -> str:
    result = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, str, list[dict]]:
    text = render(request.param)
    return request.param, text, [doc for doc in yaml.safe_load_all(text) if doc]


def one(objects: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(deployment: dict, name: str) -> dict:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def env_of(c: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def flags(args: list[str]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in args if arg.startswith("--") and "=" in arg)


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


# ---------------------------------------------------------------- schemas


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_objects_validate_strictly(overlay, version, tmp_path):
    name, text, objects = overlay
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    result = subprocess.run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "-k", version, str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    skipped = {o["kind"] for o in objects if o["kind"] in CUSTOM_KINDS}
    assert all(f"kind {kind}" in result.stdout + result.stderr for kind in skipped)  # skipped with a warning, said so


def test_strict_validation_rejects_a_misspelt_field(tmp_path):
    """The validator can fail: a Deployment with `replica:` instead of `replicas:`."""
    deployment = yaml.safe_load((K8S / "base" / "gateway-deployment.yaml").read_text())
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(deployment))
    result = subprocess.run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "-k", "1.37", str(tmp_path / "bad.yaml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "replica" in result.stdout + result.stderr


# ---------------------------------------------------------------- Triton


def test_triton_gets_a_gpu_in_production_only(overlay):
    name, _, objects = overlay
    triton = one(objects, "Deployment", "triton")
    resources = container(triton, "triton")["resources"]
    args = container(triton, "triton")["args"]
    if name == "gpu-prod":
        assert resources["limits"]["nvidia.com/gpu"] == 1 and resources["requests"]["nvidia.com/gpu"] == 1
        spec = triton["spec"]["template"]["spec"]
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert any(e["key"].startswith("nvidia.com/gpu") for t in terms for e in t["matchExpressions"])
        assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in spec["tolerations"])
        assert "--model-config-name=cpu" not in args  # config.pbtxt: KIND_GPU, fp16
    else:
        assert "nvidia.com/gpu" not in json.dumps(resources) and "--model-config-name=cpu" in args


def test_triton_has_memory_backed_shared_memory_within_its_memory_limit(overlay):
    _, _, objects = overlay
    triton = one(objects, "Deployment", "triton")
    volume = next(v for v in triton["spec"]["template"]["spec"]["volumes"] if v["name"] == "dshm")
    assert volume["emptyDir"]["medium"] == "Memory"
    mount = next(m for m in container(triton, "triton")["volumeMounts"] if m["name"] == "dshm")
    assert mount["mountPath"] == "/dev/shm"
    assert quantity(volume["emptyDir"]["sizeLimit"]) >= 1 << 30  # Docker's 64 MB default is far too small
    assert quantity(volume["emptyDir"]["sizeLimit"]) < quantity(container(triton, "triton")["resources"]["limits"]["memory"])


def quantity(text: str) -> float:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 1e3, "M": 1e6, "G": 1e9, "m": 1e-3}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text))
    return float(match.group(1)) * units.get(match.group(2), 1)


def test_triton_probes_hit_the_health_endpoints_and_the_startup_budget_covers_a_measured_model_load(overlay):
    _, _, objects = overlay
    c = container(one(objects, "Deployment", "triton"), "triton")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == TRITON_PORTS
    # Liveness is an inference: Triton's own health endpoints stay 200 after the model's stub died.
    assert c["livenessProbe"]["exec"]["command"][:3] == ["python3", "-m", "ara_reranker_model.probe"]
    command = c["livenessProbe"]["exec"]["command"]
    assert c["livenessProbe"]["timeoutSeconds"] > float(command[command.index("--timeout") + 1])
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    for probe in ("readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] in ("http", TRITON_PORTS["http"])
    # Explicit model control: the gateway can reload a model whose stub died.
    assert flags(c["args"])["model-control-mode"] == "explicit" and flags(c["args"])["load-model"] == "ara_reranker"
    startup = c["startupProbe"]
    budget = startup.get("initialDelaySeconds", 0) + startup["failureThreshold"] * startup["periodSeconds"]
    # ARA-Reranker-V1's shape, from tritonserver start to READY (deploy/k8s/measure_model_load.py). Twice that,
    # plus a minute for reading 2.2 GB from slow network storage on a cold node.
    measured = json.loads((K8S / "model-load.json").read_text())
    assert measured["model"] == "large"
    assert budget >= 2 * measured["max_s"] + 60, f"startup budget {budget}s vs measured load {measured['max_s']}s"


def test_triton_shuts_down_within_its_grace_period_and_recycles_grpc_connections(overlay):
    _, _, objects = overlay
    spec = one(objects, "Deployment", "triton")["spec"]["template"]["spec"]
    c = container({"spec": {"template": {"spec": spec}}}, "triton")
    args = flags(c["args"])
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] > pre_stop + int(args["exit-timeout-secs"])
    age, grace = int(args["grpc-max-connection-age"]), int(args["grpc-max-connection-age-grace"])  # milliseconds
    assert 10_000 <= age <= 300_000 and grace > 0
    assert args["model-repository"] == "/opt/ara-reranker/model_repository"
    assert c["args"][0] == "tritonserver" and "command" not in c  # the image's NVIDIA entrypoint stays


def test_one_setting_turns_tracing_on_for_gateways_and_triton(overlay):
    """The tracing ConfigMap (OTEL_EXPORTER_OTLP_ENDPOINT, empty: off) reaches both Deployments; Triton's flags are
    the launcher's for that endpoint (Kubernetes expands $(VAR) in args from the container's environment)."""
    _, _, objects = overlay
    (config,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("tracing")]
    assert config["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == ""
    for deployment, name in (("triton", "triton"), ("reranker-gateway", "gateway")):
        c = container(one(objects, "Deployment", deployment), name)
        assert [e["configMapRef"]["name"] for e in c["envFrom"]] == [config["metadata"]["name"]]
    triton = container(one(objects, "Deployment", "triton"), "triton")
    expected = trace_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "$(OTEL_EXPORTER_OTLP_ENDPOINT)"})
    assert [a for a in triton["args"] if a.startswith("--trace-config")] == [f"--trace-config={v}" for v in expected]


def test_only_gateways_reach_tritons_inference_ports_and_only_monitoring_the_metrics(overlay):
    _, _, objects = overlay
    triton, gateway = one(objects, "Deployment", "triton"), one(objects, "Deployment", "reranker-gateway")
    policy = one(objects, "NetworkPolicy", "triton")
    assert matches(policy["spec"]["podSelector"], triton["spec"]["template"]["metadata"]["labels"])
    rules = {tuple(sorted(p["port"] for p in rule["ports"])): rule["from"] for rule in policy["spec"]["ingress"]}
    assert set(rules) == {(TRITON_PORTS["http"], TRITON_PORTS["grpc"]), (TRITON_PORTS["metrics"],)}
    (inference,) = rules[(TRITON_PORTS["http"], TRITON_PORTS["grpc"])]
    assert matches(inference["podSelector"], gateway["spec"]["template"]["metadata"]["labels"])
    assert not matches(inference["podSelector"], triton["spec"]["template"]["metadata"]["labels"])
    (metrics,) = rules[(TRITON_PORTS["metrics"],)]
    assert metrics["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    gateway_policy = one(objects, "NetworkPolicy", "reranker-gateway")
    assert matches(gateway_policy["spec"]["podSelector"], gateway["spec"]["template"]["metadata"]["labels"])
    open_rule = next(rule for rule in gateway_policy["spec"]["ingress"] if "from" not in rule)
    assert sorted(p["port"] for p in open_rule["ports"]) == [8080, 50051]  # the APIs, to every caller


def test_the_headless_service_ports_equal_the_container_ports(overlay):
    _, _, objects = overlay
    service = one(objects, "Service", "triton")
    assert service["spec"]["clusterIP"] == "None"
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == TRITON_PORTS
    triton = one(objects, "Deployment", "triton")
    assert matches({"matchLabels": service["spec"]["selector"]}, triton["spec"]["template"]["metadata"]["labels"])


# ---------------------------------------------------------------- gateway


def test_the_gateway_targets_the_headless_service_by_dns(overlay):
    _, _, objects = overlay
    gateway = one(objects, "Deployment", "reranker-gateway")
    service = one(objects, "Service", "triton")
    target = env_of(container(gateway, "gateway"))["RERANKER_TRITON_ENDPOINTS"]
    namespace = service["metadata"]["namespace"]
    assert gateway["metadata"]["namespace"] == namespace
    assert target == f"dns:///{service['metadata']['name']}.{namespace}.svc.cluster.local:{TRITON_PORTS['grpc']}"


def test_gateway_env_names_real_settings_that_accept_their_values(overlay):
    name, _, objects = overlay
    c = container(one(objects, "Deployment", "reranker-gateway"), "gateway")
    names = {e["name"] for e in c["env"]}
    known = {env for _, env, _, _ in Settings.docs()}
    assert names <= known, f"not settings: {sorted(names - known)}"
    settings = Settings.from_env(env_of(c))
    # The gateway's limits agree with the Triton configuration the overlay runs (ara_reranker_model.limits.COUPLED_LIMITS).
    config = triton_config.read(triton_config.CONFIGS["cpu" if name == "cpu-dev" else "gpu"])
    values = vars(triton_config.limits(config)) | {k: getattr(settings, k) for k in ("chunk_size", "max_documents", "max_inflight_pairs")}
    assert coupled_limit_problems(values) == []
    assert settings.listen.endswith(":50051") and settings.metrics_listen.endswith(":9464")
    assert settings.http_listen.endswith(":8080")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": 50051, "http": 8080, "metrics": 9464}
    assert all(n.startswith(ENV_PREFIX) for n in names)


def test_gateway_probes_use_native_grpc_health_and_shutdown_fits_its_grace(overlay):
    _, _, objects = overlay
    spec = one(objects, "Deployment", "reranker-gateway")["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["readinessProbe"]["grpc"]["port"] == 50051 and isinstance(c["readinessProbe"]["grpc"]["port"], int)
    settings = Settings.from_env(env_of(c))
    assert spec["terminationGracePeriodSeconds"] > settings.drain_s + settings.grace_period_s


# ---------------------------------------------------------------- everything


def test_disruption_budgets_autoscalers_and_spread_select_the_pods(overlay):
    name, _, objects = overlay
    pods = {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"] for o in objects if o["kind"] == "Deployment"}
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    assert {b["metadata"]["name"] for b in budgets} == set(pods)
    for budget in budgets:
        assert budget["spec"]["maxUnavailable"] == 1 and matches(budget["spec"]["selector"], pods[budget["metadata"]["name"]])
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        spec = deployment["spec"]
        assert matches(spec["selector"], spec["template"]["metadata"]["labels"])
        keys = {t["topologyKey"] for t in spec["template"]["spec"]["topologySpreadConstraints"]}
        assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
        assert all(matches(t["labelSelector"], spec["template"]["metadata"]["labels"])
                   for t in spec["template"]["spec"]["topologySpreadConstraints"])
    autoscalers = {o["metadata"]["name"]: o for o in objects if o["kind"] == "HorizontalPodAutoscaler"}
    if name == "gpu-prod":
        assert set(autoscalers) == {"triton", "reranker-gateway"}
        for target, hpa in autoscalers.items():
            assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": target}
        assert autoscalers["reranker-gateway"]["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        metric = autoscalers["triton"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
        adapter = yaml.safe_load((K8S / "components/autoscaling/prometheus-adapter-values.yaml").read_text())
        assert metric in [rule["name"]["as"] for rule in adapter["rules"]["custom"]]


def test_images_are_pinned_and_pods_run_as_non_root(overlay):
    _, _, objects = overlay
    for workload in (o for o in objects if o["kind"] in ("Deployment", "Job")):
        spec = workload["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] >= 1000
        assert spec["automountServiceAccountToken"] is False
        for c in spec.get("initContainers", []) + spec["containers"]:
            image = c["image"]
            assert re.fullmatch(r"[\w.:/-]+:[\w.-]+", image) and not image.endswith(":latest"), image
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert "limits" in c["resources"] and "memory" in c["resources"]["limits"]


def test_monitoring_objects_scrape_the_jobs_the_alerts_use():
    objects = [doc for doc in yaml.safe_load_all(render("gpu-prod")) if doc]
    jobs = {job["job_name"] for job in yaml.safe_load((MONITORING / "prometheus.yml").read_text())["scrape_configs"]}
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    services = [o for o in objects if o["kind"] == "Service"]
    relabelled = set()
    for monitor in monitors:
        selected = [s for s in services if matches(monitor["spec"]["selector"], s["metadata"]["labels"])]
        assert selected, monitor["metadata"]["name"]
        for endpoint in monitor["spec"]["endpoints"]:
            assert all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in selected)
            relabelled |= {r["replacement"] for r in endpoint["relabelings"] if r["targetLabel"] == "job"}
    assert relabelled == jobs


def test_the_prometheus_rule_and_dashboard_configmap_equal_their_sources():
    result = subprocess.run([sys.executable, "-m", "deploy.k8s.generate_monitoring", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(render("gpu-prod")) if doc]
    rule = one(objects, "PrometheusRule", "ara-reranker")
    assert rule["spec"]["groups"] == yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    dashboard = one(objects, "ConfigMap", "ara-reranker-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["ara-reranker.json"] == (MONITORING / "grafana-dashboard.json").read_text()
