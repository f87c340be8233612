"""Scrape ``GET /metrics`` of a real server and parse it with prometheus-client's own parser (what a
Prometheus server would read)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(admin_url: str, token: str) -> Samples:
    resp = httpx.get(f"{admin_url}/metrics", headers={"authorization": f"Bearer {token}"}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when it is absent (a counter nothing added to yet has no label set)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
