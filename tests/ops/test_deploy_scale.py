"""deploy/docker-compose.scale.yml checked statically: the topology (two API instances, one
worker, PostgreSQL, MinIO and its bucket, nginx in front), that every instance shares the
database and the bucket and nothing on disk, and nginx's own check of the balancer config."""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

DEPLOY = REPO / "deploy"
NGINX_CONF = DEPLOY / "nginx" / "nginx.conf"
API, WORKERS = ("api-a", "api-b"), ("worker",)
INSTANCES = API + WORKERS
#: What may differ between instances: how many workers, the metrics port, the trusted proxy.
PER_INSTANCE = {"BULKPORT_WORKERS", "BULKPORT_WORKER_METRICS_PORT", "FORWARDED_ALLOW_IPS"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.scale.yml").read_text())
    return loaded


def upstreams(text: str) -> dict[str, list[tuple[str, int]]]:
    """``upstream NAME { server HOST:PORT ...; }`` blocks of an nginx config."""
    text = re.sub(r"#[^\n]*", "", text)
    return {name: [(h, int(p)) for h, p in re.findall(r"^\s*server\s+([\w.-]+):(\d+)", body,
                                                      re.MULTILINE)]
            for name, body in re.findall(r"upstream\s+(\w+)\s*\{(.*?)\}", text, re.DOTALL)}


def test_services_and_their_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "minio", "bucket", "lb", *INSTANCES}
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["minio"]["image"].startswith("minio/minio:")
    assert services["bucket"]["image"].startswith("minio/mc:")
    assert services["lb"]["image"].startswith("nginx:")
    for name in INSTANCES:
        service = services[name]
        assert service["image"] == "bulkport:local"
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).resolve() \
            == (DEPLOY / "Dockerfile").resolve()
        assert service["command"] == (["serve"] if name in API else ["worker"])
        # An instance starts once the database is healthy and the bucket exists.
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["depends_on"]["bucket"]["condition"] == "service_completed_successfully"
    assert int(services["worker"]["environment"]["BULKPORT_WORKERS"].split(":-")[-1]
               .rstrip("}")) >= 1


def test_every_instance_gets_the_same_database_and_bucket(compose: dict[str, Any]) -> None:
    services = compose["services"]
    shared = [{k: v for k, v in services[n]["environment"].items() if k not in PER_INSTANCE}
              for n in INSTANCES]
    assert all(env == shared[0] for env in shared), "instances must be configured alike"
    env = shared[0]
    assert all(k.startswith("BULKPORT_") for k in env)
    assert "@postgres:5432/" in env["BULKPORT_DATABASE_URL"]
    assert env["BULKPORT_S3_BUCKET"] and env["BULKPORT_S3_UPLOAD_PREFIX"]
    assert env["BULKPORT_S3_ENDPOINT_URL"] == "http://minio:9000"
    # The init container creates the very bucket the instances use, with MinIO's credentials.
    bucket = services["bucket"]
    assert bucket["environment"]["BUCKET"] == env["BULKPORT_S3_BUCKET"]
    assert "mc mb --ignore-existing" in " ".join(bucket["command"])
    assert "http://minio:9000" in " ".join(bucket["command"])
    minio = services["minio"]["environment"]
    assert env["BULKPORT_S3_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"] \
        == bucket["environment"]["MINIO_ROOT_USER"]
    assert env["BULKPORT_S3_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"] \
        == bucket["environment"]["MINIO_ROOT_PASSWORD"]


def test_no_volume_is_shared_between_instances(compose: dict[str, Any]) -> None:
    services = compose["services"]
    owners: dict[str, str] = {}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert name not in INSTANCES, (name, volume)  # instances mount nothing local
                assert (DEPLOY / source).exists(), (name, source)
                continue
            assert source in compose["volumes"], (name, source)
            assert owners.setdefault(source, name) == name, (source, owners[source], name)
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)  # exposure is a choice
    # Only the balancer (and MinIO's console) are published; the instances are reached
    # through the balancer.
    assert not any(services[n].get("ports") for n in INSTANCES)


def test_the_balancer_spreads_over_the_api_instances(compose: dict[str, Any]) -> None:
    services = compose["services"]
    lb = services["lb"]
    assert "./nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in lb["volumes"]
    text = NGINX_CONF.read_text()
    servers = upstreams(text)
    assert list(servers) == ["bulkport_api"]
    # The API's port is the one the image listens on.
    port = int(re.search(r"BULKPORT_PORT=(\d+)", (DEPLOY / "Dockerfile").read_text())[1])
    assert sorted(servers["bulkport_api"]) == [(name, port) for name in API]
    assert re.search(r"proxy_pass\s+http://bulkport_api;", text)
    listen = re.search(r"^\s*listen\s+(\d+);", text, re.MULTILINE)
    assert listen and lb["ports"] == [f"127.0.0.1:8000:{listen[1]}"]
    assert {n for n, d in lb["depends_on"].items() if d["condition"] == "service_healthy"} \
        == set(API)
    # The API instances trust X-Forwarded-For from the balancer's fixed address only.
    address = lb["networks"]["default"]["ipv4_address"]
    subnet = compose["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet)
    assert {services[n]["environment"]["FORWARDED_ALLOW_IPS"] for n in API} == {address}
    # nginx resolves its upstreams once: the API instances keep fixed addresses.
    fixed = [services[n]["networks"]["default"]["ipv4_address"] for n in API]
    assert len({address, *fixed}) == 3
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network(subnet) for a in fixed)
    # Streaming both ways; bulkport's own body limit answers (413), not nginx's.
    for directive in ("client_max_body_size 0;", "proxy_request_buffering off;",
                      "proxy_buffering off;"):
        assert directive in text, directive


def test_nginx_accepts_the_balancer_config(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(nginx).exists(), "nginx is missing: scripts/test installs Debian's nginx"
    # nginx -t resolves upstream host names: outside compose they point at the loopback.
    conf = tmp_path / "nginx.conf"
    conf.write_text(re.sub(r"(server\s+)api-[ab](:\d+)", r"\g<1>127.0.0.1\2",
                           NGINX_CONF.read_text()))
    result = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test is successful" in result.stderr
