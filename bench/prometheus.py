"""Reading a Prometheus /metrics page (Triton's metrics port, the gateway's): the one parser tests and benchmarks use.

    page = scrape(triton.metrics_url)
    page.value("nv_inference_count", model="ara_reranker")     # summed over the other labels
    page.totals(model="ara_reranker")                           # name -> sum, histogram buckets left out
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Scrape", "families", "parse", "scrape"]


@dataclass(frozen=True)
class Scrape:
    """Every sample of one /metrics page, keyed by (name as exposed, labels)."""

    samples: dict[tuple[str, frozenset], float]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels`` (0 when there is none)."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def has(self, name: str, **labels: str) -> bool:
        """Whether the page has a sample called ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return any(n == name and wanted <= ls for n, ls in self.samples)

    def totals(self, **labels: str) -> dict[str, float]:
        """name -> sum of its samples whose labels include ``labels``, histogram buckets left out."""
        wanted = set(labels.items())
        out: dict[str, float] = {}
        for (name, ls), v in self.samples.items():
            if wanted <= ls and not name.endswith("_bucket"):
                out[name] = out.get(name, 0.0) + v
        return out

    def labels_of(self) -> dict[str, dict[str, set[str]]]:
        """name -> label -> the values seen."""
        out: dict[str, dict[str, set[str]]] = {}
        for name, labels in self.samples:
            entry = out.setdefault(name, {})
            for label, value in labels:
                entry.setdefault(label, set()).add(value)
        return out

    def buckets(self, name: str) -> dict[float, float]:
        """le -> cumulative count of a histogram without other labels."""
        return {float(dict(ls)["le"]): v for (n, ls), v in self.samples.items() if n == name + "_bucket"}


def parse(text: str) -> Scrape:
    """The samples of a /metrics page's text."""
    # Without the # TYPE lines every sample keeps its exposed name: with them, prometheus_client renames
    # counter samples that lack "_total" (Triton's nv_inference_count), which Prometheus does not.
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(samples)


def _page(url: str, timeout_s: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return response.read().decode()


def scrape(url: str, timeout_s: float = 5.0) -> Scrape:
    """One scrape of a /metrics endpoint."""
    return parse(_page(url, timeout_s))


def families(url: str, timeout_s: float = 5.0) -> set[str]:
    """Metric family names (counters without _total, histograms without _bucket/_sum/_count)."""
    return {family.name for family in text_string_to_metric_families(_page(url, timeout_s))}
