"""The monitoring files: the alert rules load and pass their unit tests in promtool (and a rule
broken on purpose fails them), the dashboard is valid Grafana JSON, and every metric the rules,
their tests, the dashboard and docs/metrics.md name is one the code exports
(``io_connectors.prometheus_metrics.METRICS``), while every exported metric is documented."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from io_connectors.prometheus_metrics import METRICS, exported_series
from tests.support.paths import ROOT

MONITORING = ROOT / "monitoring"
PROMTOOL = "/usr/bin/promtool"
METRIC_NAME = re.compile(r"\bcryptobeam_[a-z0-9_]+\b")


def promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def rule_expressions() -> dict[str, str]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_the_rules_load_and_pass_their_unit_tests():
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0 and "SUCCESS: 7 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test():
    tests = yaml.safe_load((MONITORING / "alerts_test.yml").read_text())["tests"]
    firing = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for test in tests for case in test["alert_rule_test"] if not case["exp_alerts"]}
    assert firing == quiet == set(rule_expressions())


@pytest.mark.parametrize(
    "breakage, fails_in",
    [
        (
            (
                "time() - cryptobeam_collect_newest_trade_timestamp_seconds > 300",
                "time() - cryptobeam_collect_newest_trade_timestamp_seconds > 3000",
            ),
            "test",
        ),  # stale only after 50 min
        (
            (
                "increase(cryptobeam_collect_reconnects_total[10m]) > 5",
                "increase(cryptobeam_collect_reconnects_total[10m) > 5",
            ),
            "check",
        ),  # not PromQL
    ],
)
def test_a_broken_rule_fails(tmp_path, breakage, fails_in):
    shutil.copy(MONITORING / "alerts_test.yml", tmp_path)
    rules = (MONITORING / "alerts.yml").read_text()
    assert breakage[0] in rules
    (tmp_path / "alerts.yml").write_text(rules.replace(breakage[0], breakage[1]))
    result = promtool(
        *(("check", "rules", "alerts.yml") if fails_in == "check" else ("test", "rules", "alerts_test.yml")),
        cwd=tmp_path,
    )
    assert result.returncode != 0, result.stdout
    if fails_in == "test":
        assert "CryptobeamFeedStale" in result.stdout + result.stderr


def names_in(texts) -> set[str]:
    return {name for text in texts for name in METRIC_NAME.findall(text)}


def test_the_rules_and_the_dashboard_use_only_exported_metrics():
    exported = exported_series()
    for alert, expression in rule_expressions().items():
        assert METRIC_NAME.search(expression), alert
    for expression in dashboard_expressions():
        assert METRIC_NAME.search(expression), expression
    rule_tests = (MONITORING / "alerts_test.yml").read_text()
    used = names_in([*rule_expressions().values(), *dashboard_expressions(), rule_tests])
    assert used and used <= exported, sorted(used - exported)
    metrics = {metric.name for metric in METRICS}  # a histogram is documented by its own name
    documented = names_in([(ROOT / "docs" / "metrics.md").read_text()])
    assert documented <= exported | metrics, sorted(documented - exported - metrics)
    assert metrics <= documented, sorted(metrics - documented)


def test_an_unexported_name_is_caught():
    assert not names_in(["rate(cryptobeam_collect_trades_recieved_total[1m])"]) <= exported_series()


def test_the_dashboard_is_grafana_json_with_a_query_on_every_graph():
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    graphs = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 30 and len(graphs) >= 10
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in graphs:
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"]), panel["title"]
        assert panel["datasource"]["type"] == "prometheus"
