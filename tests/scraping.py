"""Reading a Prometheus scrape in tests: `GET /metrics` as {(sample name, labels): value}."""

from prometheus_client.parser import text_string_to_metric_families


def scrape(client) -> dict[tuple[str, frozenset], float]:
    """GET /metrics as {(sample name, labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    return parse(response.content.decode())


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)
