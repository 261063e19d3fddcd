"""deploy/prometheus/ agrees with the portal: the scrape job sends the metrics token as a bearer token to
/metrics, and every metric the example alerts use is one /metrics really serves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

PROMETHEUS = Path(settings.BASE_DIR) / "deploy" / "prometheus"
TOKEN = "d" * 40


def test_the_scrape_job_sends_the_token_to_metrics():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "vmportal")
    assert job["metrics_path"] == "/metrics"
    assert job["scheme"] == "https"  # the web tier redirects plain HTTP in production
    assert job["authorization"]["type"] == "Bearer" and job["authorization"]["credentials_file"]
    assert config["rule_files"] == ["vmportal-alerts.yml"]


@pytest.mark.django_db
def test_every_metric_the_alerts_use_is_served(settings):
    settings.METRICS_TOKEN = TOKEN
    Client().get("/healthz")  # so the request histogram has a series
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    served = {family.name for family in text_string_to_metric_families(response.content.decode())}
    rules = yaml.safe_load((PROMETHEUS / "vmportal-alerts.yml").read_text())["groups"][0]["rules"]
    used = {re.sub(r"_(bucket|count|sum)$", "", name)
            for rule in rules for name in re.findall(r"\bvmportal_[a-z_]+", rule["expr"])}
    assert used and used <= served, used - served
