"""The docs cannot drift from the code: generated tables equal what ``make docs`` writes from the settings,
the Triton configs and the committed benchmark results; every link and anchor resolves; the README stays a
front page."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

from ara_reranker_server import triton_config
from ara_reranker_server.metrics import GatewayMetrics
from ara_reranker_server.settings import Settings, _show
from docs import generate

pytestmark = pytest.mark.unit  # starts no process: make test-unit

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


def test_readme_starts_with_the_two_commands():
    head = "\n".join(README.splitlines()[:10])
    assert "make run" in head and "make test" in head


def test_readme_is_a_front_page_and_the_rest_lives_in_docs():
    assert len(README.splitlines()) <= 200
    for page in ("architecture", "api", "configuration", "deployment", "monitoring", "evaluation", "benchmarks", "development"):
        assert f"](docs/{page}.md)" in README, f"the README does not link docs/{page}.md"


def test_generated_sections_are_what_make_docs_writes():
    assert generate.stale() == [], "run `make docs`"


def test_every_message_field_and_enum_value_of_the_proto_has_a_comment():
    """The comments are api.md's field tables (docs/proto_reference.py): a field without one is undocumented."""
    from docs import proto_reference

    assert proto_reference.undocumented() == [], "comment these in proto/reranker/v1/reranker.proto, then run `make docs`"


def test_every_gateway_setting_is_in_the_configuration_table_with_its_default():
    for name, env, default, doc in Settings.docs():
        row = f"| `{env}` | `--{name.replace('_', '-')}` | `{_show(default)}` | {doc} |"
        assert row in CONFIGURATION, f"docs/configuration.md lacks or misstates {env}: expected row\n{row}"


def test_every_triton_parameter_has_a_documented_meaning():
    documented = {path for path, _ in generate.TRITON_KNOBS}
    for name, path in triton_config.CONFIGS.items():
        fields = triton_config.fields(triton_config.read(path))
        parameters = {key for key in fields if key.startswith("parameters.")}
        assert parameters <= documented, f"{name} config: parameters without a row in docs.generate.TRITON_KNOBS"
        assert documented - {"instance_group"} - generate.UNSET_KNOBS <= fields.keys(), f"{name} config lacks a documented knob"
        assert not generate.UNSET_KNOBS & fields.keys(), f"{name} config sets a knob the docs say is left out"


def test_every_gateway_metric_is_documented():
    monitoring = (ROOT / "docs" / "monitoring.md").read_text(encoding="utf-8")
    for family in GatewayMetrics(["m"]).registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in monitoring, f"docs/monitoring.md does not document {name}"


def test_settings_come_from_flags_over_env_over_defaults():
    env = {"RERANKER_CHUNK_SIZE": "16", "RERANKER_API_KEYS": "a, b", "RERANKER_LOG_DOCUMENTS": "true"}
    settings = Settings.from_args(["--chunk-size", "8"], environ=env)
    assert settings.chunk_size == 8 and settings.api_keys == ("a", "b") and settings.log_documents is True
    assert Settings.from_args([], environ={}).listen == "0.0.0.0:50051"


def test_inconsistent_settings_are_refused_naming_them():
    with pytest.raises(ValueError, match="max_inflight_pairs"):
        Settings(max_documents=100, max_inflight_pairs=10)
    with pytest.raises(ValueError, match="tls_key"):
        Settings(tls_cert="cert.pem")


# ------------------------------------------------------------------------------------------- links
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower-cased, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").replace("*", "").lower()
    kept = "".join(c for c in text if c in " -" or unicodedata.category(c)[0] in "LNM" or unicodedata.category(c) == "Pc")
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a markdown page (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(page: Path) -> list[str]:
    """Every link and image target of a page, outside code."""
    text = INLINE_CODE.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    return LINK.findall(text)


def test_slugs_follow_githubs_rules():
    assert slug("Long documents (TRUNCATION_SPLIT)") == "long-documents-truncation_split"
    assert slug("Evaluation: the model card's MRR / MAP / nDCG@10 on your data") == (
        "evaluation-the-model-cards-mrr--map--ndcg10-on-your-data")
    assert slug("Gateway metrics (`server/metrics.py`)") == "gateway-metrics-servermetricspy"
    assert slug("HTTP APIs (Cohere, Jina, TEI) and tei.v1 gRPC") == "http-apis-cohere-jina-tei-and-teiv1-grpc"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(page: Path):
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not ours to check
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists() or ROOT not in (resolved, *resolved.parents):
            broken.append(f"{target}: no such file in the repository")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: {resolved.relative_to(ROOT)} has no heading #{anchor}")
    assert not broken, "\n".join(broken)
