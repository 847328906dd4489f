"""infra/grafana: each dashboard has the structure Grafana expects (title, uid, data-source
variable, rows, unique panel ids, queries, units, layout); every query parses and names only
metrics and labels the binaries export; the compose profile "monitoring" provisions the data
source and every dashboard.

It reads the dashboards and the provisioning files; it never starts Grafana.
"""
import json
import pathlib
import re

import yaml

from . import promql
from .report import Outcome

DASHBOARDS = "infra/grafana"
ROWS = {"diagnosis-server.json": ["Publication", "Exporter runs", "Submission API", "Database pool"]}


def dashboards(root):
    return sorted(p.relative_to(root) for p in (root / DASHBOARDS).glob("*.json"))


def every_panel(panels):
    """(panel, the row that holds it or None): collapsed rows carry their panels inside them."""
    return [(p, None) for p in panels] + [(c, p) for p in panels if p.get("type") == "row" for c in p.get("panels", [])]


def query_panel_problems(where, panel, ds_vars):
    """The data source, unit and queries of a panel that is not a row."""
    errors = []
    ds = panel.get("datasource", {})
    uids = {f"${{{v}}}" for v in ds_vars} | {f"${v}" for v in ds_vars}
    if ds.get("type") != "prometheus" or ds.get("uid") not in uids:
        variable = sorted(ds_vars)[0] if ds_vars else "datasource"
        errors.append(f"{where}: the data source must be the variable ${{{variable}}}, found {ds}")
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
    if not (isinstance(unit, str) and unit):
        errors.append(f"{where}: no unit (fieldConfig.defaults.unit)")
    targets = panel.get("targets")
    if not isinstance(targets, list) or not targets:
        return errors + [f"{where}: no queries (targets)"]
    refs = set()
    for target in targets:
        if not (isinstance(target.get("expr"), str) and target["expr"].strip()):
            errors.append(f"{where}: a query without expr")
        if target.get("refId") in refs or not target.get("refId"):
            errors.append(f"{where}: refId {target.get('refId')!r} is missing or repeated")
        refs.add(target.get("refId"))
        if "datasource" in target and target["datasource"] != ds:
            errors.append(f"{where}: query {target.get('refId')} names another data source than its panel")
    return errors


def panel_problems(panel, ids, ds_vars):
    """(problems, gridPos or None) of one panel; `ids` maps the ids seen so far to titles."""
    errors = []
    title = panel.get("title")
    where = f"panel {panel.get('id')} ({title!r})"
    if not isinstance(panel.get("id"), int):
        errors.append(f"{where}: no numeric id")
    elif panel["id"] in ids:
        errors.append(f"{where}: id {panel['id']} is also the id of {ids[panel['id']]!r}")
    else:
        ids[panel["id"]] = title
    if not (isinstance(title, str) and title.strip()):
        errors.append(f"{where}: no title")
    if not isinstance(panel.get("type"), str):
        errors.append(f"{where}: no type")
    grid = panel.get("gridPos", {})
    if not all(isinstance(grid.get(k), int) for k in "hwxy"):
        return errors + [f"{where}: gridPos needs whole numbers h, w, x, y"], None
    if grid["w"] < 1 or grid["h"] < 1 or grid["x"] < 0 or grid["x"] + grid["w"] > 24:
        errors.append(f"{where}: gridPos {grid} is outside the 24 columns")
    if panel.get("type") == "row":
        if not panel.get("collapsed") and panel.get("panels"):
            errors.append(f"{where}: an open row holds no panels of its own")
        return errors, grid
    return errors + query_panel_problems(where, panel, ds_vars), grid


def overlaps(boxes):
    """The pairs of (where, gridPos) that cover the same cells."""
    return [f"{a} and {b} overlap" for i, (a, ga) in enumerate(boxes) for b, gb in boxes[i + 1:]
            if ga["x"] < gb["x"] + gb["w"] and gb["x"] < ga["x"] + ga["w"]
            and ga["y"] < gb["y"] + gb["h"] and gb["y"] < ga["y"] + ga["h"]]


def header_problems(dash, uids, path):
    errors = []
    if not (isinstance(dash.get("title"), str) and dash["title"].strip()):
        errors.append("no title")
    uid = dash.get("uid")
    if not (isinstance(uid, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid)):
        errors.append(f"uid must be 1 to 40 letters, digits, - or _, found {uid!r}")
    elif uid in uids:
        errors.append(f"uid {uid} is also the uid of {uids[uid]}")
    else:
        uids[uid] = path
    if dash.get("id") is not None:
        errors.append("id must be null: Grafana gives a dashboard its id when it stores it")
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        errors.append("schemaVersion must be a number, 36 or later (data sources referred to by uid)")
    return errors


def dashboard_problems(path, dash, uids):
    """(problems, the note "N panels, M rows" or None) of one parsed dashboard."""
    errors = header_problems(dash, uids, path)
    variables = dash.get("templating", {}).get("list", [])
    ds_vars = {v.get("name") for v in variables if v.get("type") == "datasource" and v.get("query") == "prometheus"}
    if not ds_vars:
        errors.append("no template variable of type datasource for Prometheus: "
                      "panels must not name a data source of one Grafana")
    panels = dash.get("panels")
    if not isinstance(panels, list) or not panels:
        return errors + ["no panels"], None
    ids, boxes = {}, []
    for panel, parent in every_panel(panels):
        found, grid = panel_problems(panel, ids, ds_vars)
        errors += found
        if grid is not None and parent is None:
            boxes.append((f"panel {panel.get('id')} ({panel.get('title')!r})", grid))
    errors += overlaps(boxes)
    # Rows, top to bottom; every panel sits under one.
    ordered = sorted(panels, key=lambda p: (p.get("gridPos", {}).get("y", 0), p.get("gridPos", {}).get("x", 0)))
    if ordered[0].get("type") != "row":
        errors.append(f"the first panel, {ordered[0].get('title')!r}, is not under a row")
    rows = [p.get("title") for p in ordered if p.get("type") == "row"]
    expected = ROWS.get(path.name)
    if expected is not None and rows != expected:
        errors.append(f"rows must be {expected}, found {rows}")
    return errors, f"{path}: {len(ids)} panels, {len(rows)} rows"


def structure(root):
    """The Outcome of the structure check of every dashboard: one note per dashboard, then the problems."""
    paths = dashboards(root)
    errors = [] if paths else [f"no dashboard (*.json) in {DASHBOARDS}"]
    notes, uids = [], {}
    for path in paths:
        try:
            dash = json.loads((root / path).read_text())
        except ValueError as e:
            errors.append(f"{path}: not JSON: {e}")
            continue
        if not isinstance(dash, dict):
            errors.append(f"{path}: not a dashboard object")
            continue
        found, note = dashboard_problems(path, dash, uids)
        errors += [f"{path}: {e}" for e in found]
        notes += [note] if note else []
    return Outcome.of(errors, before=notes)


def target_problems(where, target, defined, series, known_labels):
    """(problems, the expression as promtool is to read it) of one query."""
    errors = []
    expr = target.get("expr", "")
    # Grafana's own interval variables stand for a duration; a dashboard variable must exist.
    for var in re.findall(r"\$\{?(\w+)\}?", expr):
        if not var.startswith("__") and var not in defined:
            errors.append(f"{where}: ${var} is not a variable of the dashboard")
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)\}?", "5m", expr)
    errors += [f"{where}: {p}" for p in promql.problems(expr, series)]
    for label in re.findall(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", target.get("legendFormat", "")):
        if label not in known_labels:
            errors.append(f"{where}: the legend shows {label}, which none of the metrics has")
    return errors, expr


def query_problems(root, series):
    """(problems, recording rules holding every query for promtool) of every dashboard's queries."""
    known_labels = promql.labels(series)
    errors, rules = [], []
    for path in dashboards(root):
        dash = json.loads((root / path).read_text())
        defined = {v.get("name") for v in dash.get("templating", {}).get("list", [])}
        for panel, _ in every_panel(dash.get("panels", [])):
            for target in panel.get("targets", []):
                where = f"{path}: panel {panel.get('id')} ({panel.get('title')!r}), query {target.get('refId')}"
                found, expr = target_problems(where, target, defined, series, known_labels)
                errors += found
                rules.append({"record": f"dashboard:panel_{panel.get('id')}_{target.get('refId')}", "expr": expr})
    return errors, rules


def queries(root, series_of, rules_file):
    """The query check's Outcome ("N queries", then the problems); writes the rules for promtool."""
    errors, rules = query_problems(root, series_of())
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return Outcome.of(errors, before=[f"{len(rules)} queries"])


def _mounts(root, grafana, errors):
    """{path in the container: path in the repository} of Grafana's bind mounts."""
    mounts = {}
    for volume in grafana.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            if not (root / "infra" / source).exists():
                errors.append(f"grafana mounts {source}, which does not exist")
            mounts[target] = root / "infra" / source
    return mounts


def _provisioned(provisioning, directory, key):
    """The items under `key` of every provisioning file of one directory."""
    return [item for f in sorted((provisioning / directory).glob("*.y*ml"))
            for item in yaml.safe_load(f.read_text()).get(key, [])]


def provisioning_problems(root, services):
    """What keeps the compose profile "monitoring" from showing the dashboards on Prometheus."""
    grafana = services.get("grafana")
    if grafana is None:
        return ["no service grafana in infra/compose.yaml"]
    errors = []
    if grafana.get("profiles") != ["monitoring"]:
        errors.append("grafana must run in the profile monitoring, beside prometheus")
    mounts = _mounts(root, grafana, errors)
    provisioning = mounts.get("/etc/grafana/provisioning")
    if provisioning is None:
        return errors + ["grafana must mount its provisioning directory on /etc/grafana/provisioning"]
    prometheus = [d for d in _provisioned(provisioning, "datasources", "datasources") if d.get("type") == "prometheus"]
    if not prometheus or not prometheus[0].get("isDefault"):
        errors.append("the provisioned Prometheus data source must be the default one "
                      "(the dashboards' variable starts on it)")
    elif prometheus[0].get("url", "").split("//")[-1].split(":")[0] not in services:
        errors.append(f"the Prometheus data source's URL {prometheus[0].get('url')} names no compose service")
    paths = {p.get("options", {}).get("path") for p in _provisioned(provisioning, "dashboards", "providers")
             if p.get("type", "file") == "file"}
    for dashboard in dashboards(root):
        source, folder = (root / dashboard).resolve(), (root / dashboard).parent.resolve()
        served = [t for t, s in mounts.items()
                  if (s.resolve() == source and str(pathlib.PurePosixPath(t).parent) in paths)
                  or (s.resolve() == folder and t in paths)]
        if not served:
            errors.append(f"{dashboard} is not mounted into a path a dashboard provider reads "
                          f"({sorted(p for p in paths if p)})")
    return errors


def compose_services(root):
    return yaml.safe_load((root / "infra/compose.yaml").read_text())["services"]


def run(report, ctx):
    report.section(f"Grafana ({DASHBOARDS})")
    report.check("dashboards: title, uid, data-source variable, rows, panels, units, layout",
                 lambda: structure(ctx.root))
    rules_file = ctx.work / "dashboard-rules.yml"
    outcome = report.check("dashboard queries parse and name metrics and labels the binaries export",
                           lambda: queries(ctx.root, lambda: ctx.series, rules_file))
    count = [line for line in outcome.lines() if re.fullmatch(r"[0-9]+ queries", line)]
    report.note(f"({chr(10).join(count)})")
    if ctx.promtool:
        report.command("promtool check rules: every dashboard query, as a recording rule",
                       [ctx.promtool, "check", "rules", str(rules_file)], cwd=ctx.root)
    else:
        report.skip("dashboard queries by promtool (no promtool)")
    report.check("compose: Grafana provisions the Prometheus data source and every dashboard",
                 lambda: Outcome.of(provisioning_problems(ctx.root, compose_services(ctx.root))))
