"""The series the binaries export, read from their metric macros, and the metrics and labels a
PromQL expression names, read by a PromQL parser. Shared by the Prometheus and Grafana checks.

It reads source text only; it never runs a binary or queries a Prometheus.
"""
import re

import promql_parser as promql

from .report import CheckError

ROOTS = ("core/src", "submit/src", "exporter/src")
# Scrape labels: the job, and the namespace and pod that prometheus.yml copies from Kubernetes
# (`le` and `quantile` come with the series that carry them). `instance` is not among them: on
# Kubernetes it is a pod's address, which no panel or rule has a reason to show.
TARGET_LABELS = {"job", "namespace", "pod"}
# Series from elsewhere that the rules and the dashboard read: Prometheus' scrape health and
# the kube-state-metrics series that watch the exporter's CronJob.
EXTERNAL = {
    "up": set(),
    "kube_cronjob_status_last_successful_time": {"cronjob"},
    "kube_job_status_failed": {"job_name", "condition", "reason"},
    "kube_job_status_start_time": {"job_name"},
}
_NAME = re.compile(r'\s*(?:"([a-zA-Z_:][a-zA-Z0-9_:]*)"|([A-Z][A-Z0-9_]*)\s*[,)]|([A-Z][A-Z0-9_]*)$)')
_CONST = re.compile(r'\bconst\s+([A-Z][A-Z0-9_]*)\s*:\s*&(?:\'static\s+)?str\s*=\s*"([^"]*)"')


def _arguments(text, start):
    """The text of a macro call's arguments, from just after its opening parenthesis."""
    depth = 1
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return text[start:]


def _family(kind, name, labels):
    """The series one metric macro call renders, each with its labels (core/src/telemetry.rs)."""
    if kind != "histogram":
        return {name: labels}
    if name.endswith("_duration_seconds"):  # a histogram
        return {f"{name}_bucket": labels | {"le"}, f"{name}_sum": labels, f"{name}_count": labels}
    return {name: labels | {"quantile"}, f"{name}_sum": labels, f"{name}_count": labels}  # a summary


def series_in(text, where):
    """The series the metric macros of one source file's text record."""
    # Unit tests record metrics of their own, in the module that ends a file.
    text = re.split(r"^#\[cfg\(test\)\]\s*\nmod ", text, maxsplit=1, flags=re.M)[0]
    consts = dict(_CONST.findall(text))
    series = {}
    for call in re.finditer(r"\b(counter|gauge|histogram)!\(", text):
        args = _arguments(text, call.end())
        first = _NAME.match(args)
        name = first and (first.group(1) or consts.get(first.group(2) or first.group(3)))
        if not name:
            line = text.count("\n", 0, call.start()) + 1
            raise CheckError(f"{where}:{line}: a metric whose name is neither a string literal "
                             "nor a string constant of its file; teach series_in() in infra/dev/checkinfra/promql.py")
        labels = set(re.findall(r'"([a-zA-Z_][a-zA-Z0-9_]*)"\s*=>', args))
        for series_name, series_labels in _family(call.group(1), name, labels).items():
            series.setdefault(series_name, set()).update(series_labels)
    return series


def exported(root):
    """Every series name the binaries' /metrics can hold, with the labels it carries."""
    telemetry = (root / "core/src/telemetry.rs").read_text()
    if 'Matcher::Suffix("_duration_seconds"' not in telemetry:
        raise CheckError("core/src/telemetry.rs no longer gives buckets to *_duration_seconds; "
                         "update _family() in infra/dev/checkinfra/promql.py")
    series = {}
    for crate in ROOTS:
        for path in sorted((root / crate).rglob("*.rs")):
            for name, labels in series_in(path.read_text(), path.relative_to(root)).items():
                series.setdefault(name, set()).update(labels)
    return series


def _names(tree, expr):
    """The vector selectors of a parsed expression, and the labels it groups or matches by."""
    selectors, grouping = [], set()

    def walk(node):
        if isinstance(node, promql.VectorSelector):
            selectors.append(node)
        elif isinstance(node, promql.MatrixSelector):
            walk(node.vector_selector)
        elif isinstance(node, promql.AggregateExpr):
            grouping.update(node.modifier.labels if node.modifier else [])
            walk(node.expr)
            if node.param is not None:
                walk(node.param)
        elif isinstance(node, promql.BinaryExpr):
            if node.modifier is not None:
                grouping.update(node.modifier.matching.labels if node.modifier.matching else [])
                grouping.update(node.modifier.group_labels or [])
            walk(node.lhs)
            walk(node.rhs)
        elif isinstance(node, promql.Call):
            for arg in node.args:
                walk(arg)
        elif isinstance(node, (promql.ParenExpr, promql.UnaryExpr, promql.SubqueryExpr)):
            walk(node.expr)
        elif not isinstance(node, (promql.NumberLiteral, promql.StringLiteral)):
            raise CheckError(f"unexpected PromQL node {type(node).__name__} in {expr}")

    walk(tree)
    return selectors, grouping


def problems(expr, series):
    """What is wrong with the metrics and labels `expr` names, given `series` from exported()."""
    try:
        tree = promql.parse(expr)
    except ValueError as e:
        return [f"does not parse: {e}"]
    known = dict(series)
    known.update(EXTERNAL)
    every_label = set().union(*known.values()) | TARGET_LABELS
    selectors, grouping = _names(tree, expr)
    found = []
    for selector in selectors:
        matchers = list(selector.matchers.matchers)
        name = selector.name or next((m.value for m in matchers if m.name == "__name__"
                                      and str(m.op) == "MatchOp.Equal"), None)
        if name is None:
            found.append("a selector that does not name its metric")
            continue
        if name not in known:
            found.append(f"{name} is not a metric the binaries export")
            continue
        for matcher in matchers:
            if matcher.name != "__name__" and matcher.name not in known[name] | TARGET_LABELS:
                found.append(f"{name} has no label {matcher.name}")
    for label in sorted(grouping - every_label):
        found.append(f"groups or matches by {label}, which none of these metrics has")
    return list(dict.fromkeys(found))


def labels(series):
    """Every label a series of the binaries or of EXTERNAL carries, plus the scrape labels."""
    return set().union(*series.values(), *EXTERNAL.values()) | TARGET_LABELS
