"""deploy/ checked statically: promtool on the Prometheus files, compose and dashboard structure,
and every metric the dashboard and the alerts use is one bulkport exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from bulkport.config import Settings
from tests.conftest import REPO
from tests.ops.conftest import AppClient

DEPLOY = REPO / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "bulkport.json"
METRIC = re.compile(r"\bbulkport_[a-z_]+\b")
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool not installed (Debian package prometheus)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True,
                          timeout=60)


@needs_promtool
@pytest.mark.parametrize("args", [("check", "config", "prometheus.yml"),
                                  ("check", "rules", "alerts.yml"),
                                  ("test", "rules", "alerts_test.yml")])
def test_promtool_accepts_the_prometheus_files(args: tuple[str, ...]) -> None:
    result = promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_services_and_mounts() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "bulkport", "prometheus", "grafana"}
    assert services["postgres"]["image"].startswith("postgres:15")
    app = services["bulkport"]
    assert (DEPLOY / app["build"]["context"] / app["build"]["dockerfile"]).resolve() == \
        (DEPLOY / "Dockerfile").resolve()
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "@postgres:5432/" in app["environment"]["BULKPORT_DATABASE_URL"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, source)
            else:
                assert source in compose["volumes"], (name, source)
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)  # exposure is a choice
    # Prometheus scrapes the compose service on the port the image listens on.
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = config["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["bulkport:8000"]
    assert config["rule_files"] == ["alerts.yml"]


def test_dockerfile_runs_serve_as_an_unprivileged_user() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE):
        for path in source.split():
            assert (REPO / path).exists(), path
    assert re.search(r"^USER bulkport$", text, re.MULTILINE)
    assert 'CMD ["serve"]' in text and "HEALTHCHECK" in text
    assert "BULKPORT_HOST=0.0.0.0" in text


def test_grafana_provisioning() -> None:
    source = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    datasource = source["datasources"][0]
    assert (datasource["type"], datasource["uid"]) == ("prometheus", "prometheus")
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/bulkport.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "bulkport"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "prometheus"
            assert METRIC.search(target["expr"]), target["expr"]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_dashboard_and_alerts_use_only_exposed_metrics(app_client: AppClient) -> None:
    with app_client() as client:
        text = client.get("/metrics").text
    families = set(re.findall(r"^# TYPE (bulkport_\w+) (\w+)", text, re.MULTILINE))
    exposed = set()
    for name, kind in families:
        exposed.add(name)
        if kind == "histogram":
            exposed |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    used = {m for expr in dashboard_exprs() + alert_exprs() for m in METRIC.findall(expr)}
    assert used - exposed == set()
    # ...and the dashboard shows every family bulkport exposes.
    shown = {m.removesuffix("_bucket") for e in dashboard_exprs() for m in METRIC.findall(e)}
    assert {name for name, _ in families} - shown == set()


def test_operations_doc_lists_every_setting() -> None:
    doc = (REPO / "docs" / "operations.md").read_text()
    missing = [f"BULKPORT_{name.upper()}" for name in Settings.__dataclass_fields__
               if f"`BULKPORT_{name.upper()}`" not in doc]
    assert missing == []
