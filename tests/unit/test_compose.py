"""docker-compose.yml: the stack people start with `docker compose up`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_redis_persists_and_reports_health(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_gateway_and_worker_wait_for_a_healthy_redis(compose: dict[str, Any]) -> None:
    for name in ("api", "worker"):
        service = compose["services"][name]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["environment"]["REDIS_URL"].startswith("redis://redis:")


def test_worker_reserves_a_gpu(compose: dict[str, Any]) -> None:
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def test_the_monitoring_profile_scrapes_the_gateway_and_every_worker(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
    for name in ("api", "worker", "redis"):
        assert "profiles" not in services[name]  # the plain `docker compose up` is unchanged
    config = yaml.safe_load((ROOT / "docker" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["gateway"]["static_configs"][0]["targets"] == ["api:3000"]
    assert jobs["worker"]["dns_sd_configs"][0]["names"] == ["worker"]
    assert jobs["worker"]["dns_sd_configs"][0]["port"] == 9400
    mounted = " ".join(services["grafana"]["volumes"])
    assert "docker/grafana/dashboards" in mounted and "docker/grafana/provisioning" in mounted
    assert (ROOT / "docker" / "grafana" / "dashboards" / "qwen3vl.json").exists()


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="the docker compose plugin is not installed",
)
def test_docker_compose_parses_it() -> None:
    result = subprocess.run(["docker", "compose", "config", "-q"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
