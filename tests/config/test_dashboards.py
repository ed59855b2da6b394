"""The dashboards as code: every metric the Grafana dashboard queries is one the app exports,
and the compose profile's files are where its services look for them."""

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "observability"
DASHBOARD = json.loads((OBSERVABILITY / "grafana" / "dashboards" / "customer-pipeline.json").read_text())
SERVICES = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]

# What a PromQL expression holds besides metric names: label matchers, grouping labels,
# ranges, strings and numbers; what is left and not followed by "(" names a metric.
_NOT_METRICS = [
    r"\{[^}]*\}",
    r"\b(?:by|without|on|ignoring)\s*\([^)]*\)",
    r"\[[^\]]*\]",
    r'"[^"]*"',
    r"\b\d+(\.\d+)?\b",
]
_IDENTIFIER = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")


def metric_names(expression: str) -> set[str]:
    for pattern in _NOT_METRICS:
        expression = re.sub(pattern, " ", expression)
    return set(_IDENTIFIER.findall(expression))


def _expressions() -> list[str]:
    return [target["expr"] for panel in DASHBOARD["panels"] for target in panel["targets"]]


def test_the_metric_name_reader_reads_promql_as_prometheus_would():
    expression = (
        'histogram_quantile(0.95, sum by (le, route) (rate(http_request_duration_seconds_bucket{route=~"a|b"}[5m])))'
    )
    assert metric_names(expression) == {"http_request_duration_seconds_bucket"}
    assert metric_names("time() - ingestion_last_success_timestamp_seconds > 86400") == {
        "ingestion_last_success_timestamp_seconds"
    }


@pytest.mark.django_db
def test_every_metric_the_dashboard_queries_is_exported_by_a_real_scrape(client):
    client.get("/api/customers")  # so the request metrics have a sample
    scraped = client.get("/metrics").content.decode()
    exported = {sample.name for family in text_string_to_metric_families(scraped) for sample in family.samples}

    queried = set().union(*map(metric_names, _expressions()))

    assert len(queried) >= 10
    assert queried - exported == set()


def test_the_dashboard_shows_what_an_operator_looks_for():
    titles = {panel["title"] for panel in DASHBOARD["panels"]}
    assert {
        "Runs by status",
        "Rows per second",
        "Outcomes of fetched records",
        "Upstream retries by reason",
        "Failure rows by reason",
        "API latency p95 by route",
        "API errors by route",
    } <= titles
    assert len({panel["id"] for panel in DASHBOARD["panels"]}) == len(DASHBOARD["panels"])


def test_every_panel_reads_the_provisioned_prometheus():
    (source,) = yaml.safe_load((OBSERVABILITY / "grafana/provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    uids = {target["datasource"]["uid"] for panel in DASHBOARD["panels"] for target in panel["targets"]}
    assert uids == {source["uid"]}
    assert source["url"] == "http://prometheus:9090"


def test_the_observability_profile_mounts_files_that_exist_where_its_services_read_them():
    profiled = {name for name, service in SERVICES.items() if "observability" in service.get("profiles", [])}
    assert profiled == {"prometheus", "grafana", "jaeger"}
    assert all(not service.get("profiles") for name, service in SERVICES.items() if name not in profiled)
    mounts = {}
    for name in profiled:
        for volume in SERVICES[name].get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
                mounts[target] = ROOT / source
    assert "--config.file=/etc/prometheus/prometheus.yml" in SERVICES["prometheus"]["command"]
    provider = yaml.safe_load((OBSERVABILITY / "grafana/provisioning/dashboards/customer-pipeline.yml").read_text())
    dashboards = provider["providers"][0]["options"]["path"]
    assert (mounts[dashboards] / "customer-pipeline.json").exists()
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards}/customer-pipeline.json"


def test_prometheus_scrapes_the_api_by_a_host_it_allows():
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert (host, port, job["metrics_path"]) == ("web", "8000", "/metrics")
    django_environment = SERVICES["web"]["environment"]
    assert re.search(rf"[:,-]{host}\}}?$", django_environment["DJANGO_ALLOWED_HOSTS"])


def test_images_are_pinned_to_a_version():
    for name in ("prometheus", "grafana", "jaeger"):
        image = SERVICES[name]["image"]
        assert re.fullmatch(r"[a-z/]+:v?\d+\.\d+\.\d+", image), image
