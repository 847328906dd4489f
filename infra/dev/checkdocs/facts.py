"""What the code, the rule files and the benchmark results say: the facts the documents must match."""
import glob
import json
import os
import re
import subprocess

SCHEMA_BINARIES = ("diagnosis-submit", "diagnosis-exporter")
# Where the binaries register metrics: `counter!("name"`, `gauge!(`, `histogram!(`.
METRIC_SOURCES = ["core/src", "core/listener/src", "submit/src", "exporter/src"]
METRIC_CALL = re.compile(r'\b(?:counter|gauge|histogram)!\(\s*"([a-z_][a-z0-9_]*)"')
# The exposition adds these series to every histogram.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
ALERT_FILES = ["infra/prometheus/alerts.yml"]
BENCH_FILES = {"bench": "tests/bench/results.json", "soak": "tests/bench/soak.json"}


class FactError(Exception):
    """A fact could not be read (a binary missing, a file unreadable)."""


def schemas(repo):
    """{binary: [variable spec, ...]} as each binary's `config-schema` prints it."""
    found = {}
    for name in SCHEMA_BINARIES:
        binary = os.path.join(repo, "target", "debug", name)
        if not os.path.exists(binary):
            raise FactError(f"target/debug/{name} is missing: run `cargo build --workspace --bins` first")
        try:
            done = subprocess.run([binary, "config-schema"], capture_output=True, text=True,
                                  timeout=30, stdin=subprocess.DEVNULL, env={"PATH": os.environ.get("PATH", "")})
        except (OSError, subprocess.TimeoutExpired) as e:
            raise FactError(f"`{name} config-schema` failed: {e}") from e
        if done.returncode != 0:
            raise FactError(f"`{name} config-schema` failed ({done.returncode}): {done.stderr.strip()[:200]}")
        try:
            found[name] = json.loads(done.stdout)
        except ValueError as e:
            raise FactError(f"`{name} config-schema` printed no JSON: {e}") from e
    return found


def _without_tests(source):
    """Rust source without its `#[cfg(test)]` module (tests record metrics of their own)."""
    match = re.search(r"^#\[cfg\(test\)\]\s*\nmod tests", source, re.MULTILINE)
    return source[: match.start()] if match else source


def metrics(repo):
    """Every metric name the binaries register, with the series a histogram adds."""
    names = set()
    for folder in METRIC_SOURCES:
        for path in glob.glob(os.path.join(repo, folder, "**", "*.rs"), recursive=True):
            with open(path, encoding="utf-8") as f:
                source = _without_tests(f.read())
            for match in METRIC_CALL.finditer(source):
                names.add(match.group(1))
                if source[match.start():].startswith("histogram!"):
                    names.update(match.group(1) + suffix for suffix in HISTOGRAM_SUFFIXES)
    return names


def metric_prefixes(names):
    """The first word of every metric name (`submit_`, `exporter_`, `db_pool_`)."""
    prefixes = set()
    for name in names:
        if name.startswith("db_pool_"):
            prefixes.add("db_pool_")
        else:
            prefixes.add(name.split("_", 1)[0] + "_")
    return prefixes


def not_metrics(repo, prefixes):
    """Names with a metric's prefix that are something else: tables, roles, Terraform
    variables, chaos scenario keys, test modules. Read from the files that define them."""
    words = set()
    sources = glob.glob(os.path.join(repo, "sql", "*.sql"))
    sources += glob.glob(os.path.join(repo, "infra", "terraform", "**", "*"), recursive=True)
    sources += glob.glob(os.path.join(repo, "infra", "k8s", "**", "*.yaml"), recursive=True)
    sources += glob.glob(os.path.join(repo, "tests", "src", "chaos", "*.rs"))
    sources += [os.path.join(repo, "infra", "compose.yaml")]
    pattern = re.compile(r"\b(?:%s)[a-z0-9_]*[a-z0-9]\b" % "|".join(re.escape(p) for p in prefixes))
    for path in sources:
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                words.update(pattern.findall(f.read()))
    for path in glob.glob(os.path.join(repo, "tests", "**", "*.rs"), recursive=True):
        words.add(os.path.splitext(os.path.basename(path))[0])
    return words


def alerts(repo):
    """Every alert name of the Prometheus rule files."""
    names = set()
    for path in ALERT_FILES:
        with open(os.path.join(repo, path), encoding="utf-8") as f:
            names.update(re.findall(r"^\s*-\s*alert:\s*([A-Za-z0-9_]+)\s*$", f.read(), re.MULTILINE))
    return names


def rust_types(repo):
    """Names of the Rust types, traits and enums (a `DiagnosisKey` is not an alert)."""
    names = set()
    paths = []
    for folder in ("core", "submit", "exporter", "proto", "tests"):
        paths += glob.glob(os.path.join(repo, folder, "**", "*.rs"), recursive=True)
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            names.update(re.findall(r"\b(?:struct|enum|trait|type)\s+([A-Z][A-Za-z0-9]*)", f.read()))
    return names


def bench_figures(repo):
    """{"bench": results.json, "soak": soak.json} as parsed JSON."""
    found = {}
    for kind, path in BENCH_FILES.items():
        full = os.path.join(repo, path)
        if os.path.exists(full):
            with open(full, encoding="utf-8") as f:
                found[kind] = json.load(f)
    return found
