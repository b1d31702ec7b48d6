"""deploy/monitoring/ run for real: promtool checks the scrape config and rules, its unit tests make every alert
fire and stay quiet, and a real Prometheus scrapes the running gateway and Triton and answers every dashboard
panel's and alert's query with data.

prometheus and promtool come from Debian's package, unpacked into .tools/ by `make tools` (`make test` does it).
Model: the offline tiny model (random weights); only which series exist and move matters here.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from ara_reranker_client import RerankerClient, RerankerError
from ara_reranker_server.launcher.child_process import ChildProcess, wait_until
from ara_reranker_server.launcher.triton_launcher import free_port
from tests.test_metrics import TRITON_GPU_METRICS, promql_expressions, selectors, with_grafana_variables
from tools.arabic_text import QUERIES, long_passage, mixed_passages

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "deploy" / "monitoring"
ADAPTER_VALUES = ROOT / "deploy" / "k8s" / "components" / "autoscaling" / "prometheus-adapter-values.yaml"
TOOLS = ROOT / ".tools" / "prometheus" / "usr" / "bin"
MODEL = "ara_reranker"
DATA_TIMEOUT_S = 60.0


def tool(name: str) -> Path:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make tools` (make test does it) to unpack Debian's prometheus package")
    return path


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(tool("promtool")), *args], capture_output=True, text=True, timeout=60)


def alert_names() -> list[str]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


# ---------------------------------------------------------------- promtool


def test_promtool_accepts_the_scrape_config_and_the_rules():
    config = promtool("check", "config", str(MONITORING / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    assert f"{len(alert_names())} rules found" in config.stdout + config.stderr
    rules = promtool("check", "rules", str(MONITORING / "alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_alert_unit_tests_pass():
    result = promtool("test", "rules", str(MONITORING / "alerts.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_stays_quiet():
    cases = [case for test in yaml.safe_load((MONITORING / "alerts.test.yml").read_text())["tests"]
             for case in test.get("alert_rule_test", [])]
    fires = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert set(alert_names()) <= fires, f"never shown firing: {sorted(set(alert_names()) - fires)}"
    assert set(alert_names()) <= quiet, f"never shown quiet: {sorted(set(alert_names()) - quiet)}"


SERVER_ERRORS = 'code!~"OK|INVALID_ARGUMENT|NOT_FOUND|UNAUTHENTICATED|CANCELLED"'


@pytest.mark.parametrize("change", [
    (SERVER_ERRORS, 'code!~"OK|INVALID_ARGUMENT|NOT_FOUND|UNAUTHENTICATED|CANCELLED|DEADLINE_EXCEEDED"'),
    (SERVER_ERRORS, 'code!~"OK|INVALID_ARGUMENT|NOT_FOUND|UNAUTHENTICATED"'),
    (SERVER_ERRORS, 'code!~"OK|INVALID_ARGUMENT|UNAUTHENTICATED|CANCELLED"'),
])
def test_the_unit_tests_catch_a_wrong_server_error_rate(tmp_path, change):
    """Moving DEADLINE_EXCEEDED out of, or CANCELLED or NOT_FOUND into, the server-side error rate fails the unit
    tests: a service too slow for its callers must show errors; callers giving up or naming a model that is not
    served must not page anyone."""
    old, new = change
    alerts = (MONITORING / "alerts.yml").read_text()
    assert old in alerts
    (tmp_path / "alerts.yml").write_text(alerts.replace(old, new, 1))
    shutil.copy(MONITORING / "alerts.test.yml", tmp_path / "alerts.test.yml")
    result = promtool("test", "rules", str(tmp_path / "alerts.test.yml"))
    assert result.returncode != 0 and "RerankerHighErrorRate" in result.stdout + result.stderr


# ---------------------------------------------------------------- a real Prometheus on the live stack


class Prometheus:
    """A prometheus process on a free loopback port with its own storage; stopped by PID."""

    def __init__(self, config: dict, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self._child = ChildProcess("prometheus", workdir / "prometheus.log")

    def start(self) -> None:
        command = [str(tool("prometheus")), f"--config.file={self.workdir / 'prometheus.yml'}",
                   f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"]
        self._child.start(command, cwd=self.workdir)
        self.started = time.time()
        self._child.wait_ready(self._ready, 30)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        self._child.stop(15)

    def log_tail(self) -> str:
        return self._child.log_tail(20)

    def api(self, path: str, **params: str):
        url = f"{self.url}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query now: its samples (empty when the query returns no data)."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return data["result"]

    def window(self) -> str:
        """A range selector window reaching back past this Prometheus's first scrape."""
        return f"{math.ceil(time.time() - self.started) + 5}s"


def host_port(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


@pytest.fixture(scope="module")
def prometheus(gateway, triton, tmp_path_factory):
    """Prometheus with the project's prometheus.yml and alerts.yml, targets rewritten to the live loopback
    gateway and Triton, scraping and evaluating every second."""
    workdir = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    targets = {"reranker-gateway": host_port(gateway.metrics_url), "triton": host_port(triton.metrics_url)}
    assert {job["job_name"] for job in config["scrape_configs"]} == set(targets), "a job this test cannot point anywhere"
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    for rule_file in config["rule_files"]:
        shutil.copy(MONITORING / rule_file, workdir / rule_file)
    server = Prometheus(config, workdir)
    try:
        server.start()
        # Both targets scraped once before the load, so that rates over the window see it.
        wait_until(lambda: sorted(float(s["value"][1]) for s in server.query("up")) == [1.0, 1.0], DATA_TIMEOUT_S,
                   "two targets up", server.log_tail)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def known_load(prometheus, gateway, triton, rng) -> dict[str, int]:
    """Successful calls (with truncated documents) and one refused as invalid."""
    sent = {"OK": 0, "INVALID_ARGUMENT": 0}
    with RerankerClient(gateway.target) as client:
        for i in range(6):
            client.rerank(QUERIES[i % len(QUERIES)], [*mixed_passages(rng, 3), long_passage(rng)])
            sent["OK"] += 1
        with pytest.raises(RerankerError) as refused:
            client.rerank("س" * 10_000, ["نص"])  # over max_query_chars
        assert refused.value.code.name == "INVALID_ARGUMENT"
        sent["INVALID_ARGUMENT"] += 1
    return sent


def on_gpu_only(expr: str) -> bool:
    return any(name and name.startswith(("nv_gpu_", "nv_energy_")) for name, _ in selectors(expr))


def alert_quantity(expr: str) -> str:
    """An expression without its final comparison with a number: the quantity an alert watches, or a panel
    without its "> 0" display filter."""
    match = re.fullmatch(r"(.*?)\s*(==|!=|>=|<=|>|<)\s*[-+0-9.e]+\s*", expr.strip(), re.DOTALL)
    assert match, f"no threshold comparison at the end of {expr!r}"
    return match.group(1)


def live_queries(window: str) -> list[tuple[str, str]]:
    """(where, PromQL) of every dashboard panel and alert, with Grafana's variables filled in. Alerts are asked
    for the quantity they compare, which has data whether or not the alert fires; panels that hide zero rates
    ("> 0") without the filter: Triton 2.51 counts no nv_inference_request_failure for requests it or the model
    refuses as invalid (checked by hand: wrong dtype, too many rows, ids out of range), so that panel is zero here."""
    out = []
    for where, expr in promql_expressions():
        filled = with_grafana_variables(expr.replace("${__rate_interval}", window).replace("$__rate_interval", window))
        has_filter = where.startswith("alert ") or re.search(r">\s*0\s*$", filled)
        out.append((where, alert_quantity(filled) if has_filter else filled))
    return out


def test_a_real_prometheus_answers_every_dashboard_and_alert_query_with_data(prometheus, known_load, triton, gateway):
    gateway_metrics_url = lambda: gateway.metrics_url  # noqa: E731
    window = prometheus.window()
    queries = [(where, expr) for where, expr in live_queries(window) if not on_gpu_only(expr)]
    gpu_only = [(where, expr) for where, expr in live_queries(window) if on_gpu_only(expr)]
    assert len(queries) >= 30 and gpu_only
    missing: list[str] = []

    def all_have_data() -> bool:
        nonlocal queries, missing
        window = prometheus.window()
        queries = [(where, expr) for where, expr in live_queries(window) if not on_gpu_only(expr)]
        missing = [f"{where}: {expr}" for where, expr in queries if not prometheus.query(expr)]
        return not missing

    wait_until(all_have_data, DATA_TIMEOUT_S, "data for every query", lambda: "\n".join(missing))
    # The values are what the load makes them: both targets up, ratios within [0, 1], requests counted.
    assert {s["metric"]["job"]: float(s["value"][1]) for s in prometheus.query("up")} == {"reranker-gateway": 1.0, "triton": 1.0}
    # Prometheus has scraped the gateway since the load ended: its counter equals the gateway's own.
    ok_series = 'sum(reranker_requests_total{method="Rerank",code="OK"})'

    def scraped_after_load() -> bool:
        with urllib.request.urlopen(gateway_metrics_url(), timeout=5) as response:
            text = response.read().decode()
        own = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("reranker_requests_total{") and 'code="OK"' in line and 'method="Rerank"' in line)
        seen = prometheus.query(ok_series)
        return bool(seen) and float(seen[0]["value"][1]) == own

    wait_until(scraped_after_load, DATA_TIMEOUT_S, "a scrape of the gateway after the load")
    window = prometheus.window()
    ok = prometheus.query(f'sum(increase(reranker_requests_total{{method="Rerank",code="OK"}}[{window}]))')
    assert float(ok[0]["value"][1]) >= known_load["OK"] * 0.9  # increase() extrapolates a little either way
    errors = prometheus.query(alert_quantity(dict(alerts_by_name())["RerankerHighClientErrorRate"]))
    assert all(0 < float(s["value"][1]) <= 1 for s in errors), errors
    # GPU metrics exist only where Triton sees a GPU; without one, check their names against Triton's documented ones.
    gpu_exported = any(s["metric"]["__name__"].startswith("nv_gpu_") for s in prometheus.query('{__name__=~"nv_gpu_.*"}'))
    if not gpu_exported:
        names = {name for _, expr in gpu_only for name, _ in selectors(expr)}
        assert names <= TRITON_GPU_METRICS, sorted(names - TRITON_GPU_METRICS)


def alerts_by_name() -> list[tuple[str, str]]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


def test_prometheus_loads_and_evaluates_every_alert_rule(prometheus, known_load):
    state: dict[str, str] = {}

    def evaluated() -> bool:
        rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
        state.clear()
        state.update({rule["name"]: rule["health"] + (f" ({rule.get('lastError')})" if rule.get("lastError") else "") for rule in rules})
        return set(state) == set(alert_names()) and all(health == "ok" for health in state.values())

    wait_until(evaluated, DATA_TIMEOUT_S, "healthy evaluation of every rule", lambda: json.dumps(state, indent=1))
    # The live stack is healthy: its own alerts stay quiet.
    firing = [a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"] if a["state"] == "firing"]
    assert firing == []


def test_the_autoscaling_metric_query_of_prometheus_adapter_has_data(prometheus, known_load):
    """The Triton HPA's custom metric, as prometheus-adapter would ask Prometheus for it (one pod: one target)."""
    rule = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"][0]
    expr = rule["metricsQuery"].replace("<<.GroupBy>>", "instance").replace("<<.LabelMatchers>>", 'job="triton"')
    series = rule["seriesQuery"].replace('namespace!="",pod!=""', 'job="triton"')
    wait_until(lambda: bool(prometheus.query(series)) and bool(prometheus.query(expr)), DATA_TIMEOUT_S,
               f"data for {expr}")
    value = float(prometheus.query(expr)[0]["value"][1])
    assert value >= 0 and not math.isnan(value)
