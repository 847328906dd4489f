"""infra/prometheus: the alert rules name only metrics and labels the binaries export, and
promtool checks the rules, their unit tests and both scrape configurations.

It reads the files and runs promtool on them (or on a copy in the scratch directory); it never
scrapes anything.
"""
import shutil

import yaml

from . import promql
from .report import CheckError, Outcome, run_command

ALERTS = "infra/prometheus/alerts.yml"
ROLES = ("pod", "endpoints", "service", "node", "endpointslice", "ingress")
NO_KUBERNETES = "field kubernetes_sd_configs not found"


def alert_problems(rules, series):
    """What is wrong with the metrics and labels each rule's expression names."""
    errors = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            errors += [f"{rule.get('alert') or rule.get('record')}: {p}" for p in promql.problems(rule["expr"], series)]
    return errors


def without_kubernetes_discovery(config):
    """The scrape configuration with each kubernetes_sd_configs block swapped for a static target."""
    for job in config["scrape_configs"]:
        for sd in job.pop("kubernetes_sd_configs", []):
            if sd.get("role") not in ROLES:
                raise CheckError(f"job {job.get('job_name')}: kubernetes_sd_configs with an unknown role: {sd}")
        job.setdefault("static_configs", [{"targets": ["example:2222"]}])
    return config


def check_without_kubernetes(ctx):
    """promtool on a copy of prometheus.yml whose Kubernetes discovery is a static target."""
    copy = ctx.work / "prometheus"
    copy.mkdir(exist_ok=True)
    shutil.copy(ctx.root / ALERTS, copy)
    config = without_kubernetes_discovery(yaml.safe_load((ctx.root / "infra/prometheus/prometheus.yml").read_text()))
    (copy / "prometheus.yml").write_text(yaml.safe_dump(config))
    return run_command([ctx.promtool, "check", "config", str(copy / "prometheus.yml")], cwd=ctx.root)


def promtool_checks(report, ctx):
    report.command(f"promtool check rules {ALERTS}", [ctx.promtool, "check", "rules", ALERTS], cwd=ctx.root)
    report.command("promtool test rules infra/prometheus/alerts.test.yml",
                   [ctx.promtool, "test", "rules", "infra/prometheus/alerts.test.yml"], cwd=ctx.root)
    report.command("promtool check config infra/prometheus/prometheus-compose.yml",
                   [ctx.promtool, "check", "config", "infra/prometheus/prometheus-compose.yml"], cwd=ctx.root)
    title = "promtool check config infra/prometheus/prometheus.yml"
    outcome = run_command([ctx.promtool, "check", "config", "infra/prometheus/prometheus.yml"], cwd=ctx.root)
    if outcome.ok or not any(NO_KUBERNETES in line for line in outcome.lines()):
        report.record(title, outcome)
        return
    # Debian builds Prometheus without Kubernetes service discovery: check everything else
    # with the discovery block swapped for a static target.
    report.check(f"{title} (kubernetes_sd_configs swapped for a static target)", lambda: check_without_kubernetes(ctx))
    report.skip("kubernetes_sd_configs in prometheus.yml by promtool "
                "(this promtool is built without Kubernetes discovery)")


def run(report, ctx):
    report.section("Prometheus (infra/prometheus)")
    report.check("alert expressions name metrics and labels the binaries export",
                 lambda: Outcome.of(alert_problems(yaml.safe_load((ctx.root / ALERTS).read_text()), ctx.series)))
    if ctx.promtool:
        promtool_checks(report, ctx)
    else:
        report.skip("promtool (not on PATH, and Debian's prometheus package could not be unpacked)")
