"""The checks against the facts: README's configuration table against the binaries' schemas,
metric and alert names against the code and the rule files, quoted benchmark figures against
the results they quote."""
import os
import re

from . import facts

TABLE_HEADER = "| variable | default | meaning |"
SECTIONS = {"common": facts.SCHEMA_BINARIES, "submit": ("diagnosis-submit",),
            "exporter": ("diagnosis-exporter",)}
# A default cell without a value: required, off, empty, or not read by that binary.
NO_DEFAULT = ("—", "unset", "empty", "not read")
RANGE = re.compile(r"(?<![\d.])(-?\d+)\s*[–-]\s*(\d+)(?![\d.])")
FIGURE_MARKER = re.compile(r"<!--\s*(bench|soak):\s*([A-Za-z0-9_.]+)\s*-->\s*([−-]?\d{1,3}(?: \d{3})*(?:\.\d+)?|[−-]?\d+(?:\.\d+)?)")
ANY_MARKER = re.compile(r"<!--\s*(bench|soak):")
# The document that describes every metric the binaries register.
METRICS_REFERENCE = "infra/RUNBOOK.md"


def _read(docs, path):
    with open(os.path.join(docs, path), encoding="utf-8") as f:
        return f.read()


def _cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split(" | ")]


def configuration_rows(text):
    """(line number, section, [variables], default cell, whole row) of README's table."""
    rows, section, inside = [], None, False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() == TABLE_HEADER:
            inside = True
            continue
        if not inside:
            continue
        if not line.startswith("|"):
            if rows or section:
                break
            continue
        cells = _cells(line)
        heading = re.fullmatch(r"\*\*(\w+)\*\*", cells[0])
        if heading:
            section = heading.group(1)
            continue
        if set(cells[0]) <= {"-", "|", ":"}:
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        rows.append((number, section, names, cells[1] if len(cells) > 1 else "", line))
    return rows


def _default_problems(spec, cell):
    shown = re.findall(r"`([^`]*)`", cell)
    if spec["kind"] == "ignored":
        return [] if cell.startswith("not read") else ["the binary does not read it: the default column must say \"not read\""]
    if cell.startswith("not read"):
        return ["the binary reads it, yet the default column says \"not read\""]
    if spec["default"] is None:
        problems = []
        if shown or not cell.startswith(NO_DEFAULT):
            problems.append(f"the code has no default, the table shows {cell!r}")
        if spec["required"] and "required" not in cell:
            problems.append("the code requires it; the default column must say so")
        return problems
    if not shown or shown[0] != spec["default"]:
        return [f"default {shown[0] if shown else cell!r} in the table, {spec['default']!r} in the code"]
    return []


def _range_problems(specs, row_meaning):
    ranges = {(spec["min"], spec["max"]) for spec in specs if spec["min"] is not None}
    problems = []
    if ranges:
        written = [(int(a), int(b)) for a, b in RANGE.findall(row_meaning)]
        for low, high in sorted(ranges):
            if (low, high) not in written:
                problems.append(f"range {low}–{high} (the code's) is not in the row")
        if written and written[0] not in ranges:
            low, high = written[0]
            problems.append(f"range {low}–{high} in the table, "
                            + ", ".join(f"{a}–{b}" for a, b in sorted(ranges)) + " in the code")
    words = set()
    for spec in specs:
        words.update(spec["allowed"])
    for word in sorted(words):
        if f"`{word}`" not in row_meaning:
            problems.append(f"accepted value `{word}` (the code's) is not in the row")
    return problems


def configuration_table(docs, schemas):
    """README's configuration table against the binaries' `config-schema`, both directions."""
    text = _read(docs, "README.md")
    rows = configuration_rows(text)
    by_binary = {binary: {spec["name"]: spec for spec in specs} for binary, specs in schemas.items()}
    problems, seen = [], {binary: set() for binary in schemas}
    for number, section, names, default, line in rows:
        binaries = SECTIONS.get(section)
        if binaries is None:
            problems.append(f"README.md:{number}: a configuration row outside the sections common, submit, exporter")
            continue
        meaning = " | ".join(_cells(line)[2:])
        for name in names:
            specs = []
            for binary in binaries:
                spec = by_binary.get(binary, {}).get(name)
                if spec is None:
                    problems.append(f"README.md:{number}: `{name}` is listed under {section}, but "
                                    f"`{binary} config-schema` does not read it")
                    continue
                seen[binary].add(name)
                specs.append(spec)
            for spec in specs[:1] if len({repr(s["default"]) for s in specs}) <= 1 else specs:
                for problem in _default_problems(spec, default):
                    problems.append(f"README.md:{number}: `{name}`: {problem}")
            for problem in _range_problems(specs, meaning):
                problems.append(f"README.md:{number}: `{name}`: {problem}")
    for binary, specs in by_binary.items():
        for name in sorted(set(specs) - seen[binary]):
            problems.append(f"README.md: the configuration table lacks `{name}` under common or "
                            f"{binary.split('-', 1)[1]} (`{binary} config-schema` reads it)")
    return problems


def env_example_ranges(docs, schemas):
    """Every value in .env.example is one the code accepts, and a range in the comment right
    above `NAME=` is the code's."""
    ranges = {}
    for specs in schemas.values():
        for spec in specs:
            if spec["min"] is not None:
                ranges.setdefault(spec["name"], set()).add((spec["min"], spec["max"]))
    lines = _read(docs, ".env.example").splitlines()
    problems = [f".env.example:{number}: {problem}"
                for number, line in enumerate(lines, start=1) if not line.startswith("#")
                for problem in assignments([line], None, schemas)]
    for number, line in enumerate(lines, start=1):
        match = re.match(r"#?\s*([A-Z][A-Z0-9_]+)=", line)
        if not match or number < 2 or not lines[number - 2].startswith("#"):
            continue
        if match.group(1) not in ranges:
            continue
        written = {(int(a), int(b)) for a, b in RANGE.findall(lines[number - 2])}
        expected = ranges.get(match.group(1), set())
        for low, high in sorted(written - expected):
            problems.append(f".env.example:{number - 1}: range {low}-{high} of {match.group(1)}; the code's: "
                            + (", ".join(f"{a}-{b}" for a, b in sorted(expected)) or "none"))
    return problems


def _mentions(docs, documents, pattern):
    for path in documents:
        for number, line in enumerate(_read(docs, path).splitlines(), start=1):
            for match in pattern.finditer(line):
                yield path, number, line, match


def metric_names(docs, documents, repo):
    """Every metric a document names is one the binaries register, and the runbook describes
    every metric they register."""
    known = facts.metrics(repo)
    if not known:
        return ["no metric registration found in the code: the pattern in checkdocs/facts.py is stale"]
    prefixes = facts.metric_prefixes(known)
    others = facts.not_metrics(repo, prefixes)
    pattern = re.compile(r"(?<![\w/.-])((?:%s)[a-z0-9_]*[a-z0-9])\b(?!::|\.rs|\.sql|-)"
                         % "|".join(re.escape(p) for p in sorted(prefixes)))
    problems = []
    for path, number, _line, match in _mentions(docs, documents, pattern):
        name = match.group(1)
        if name not in known and name not in others:
            problems.append(f"{path}:{number}: metric `{name}` is not registered by any binary")
    runbook = _read(docs, METRICS_REFERENCE)
    for name in sorted(known):
        if not name.endswith(facts.HISTOGRAM_SUFFIXES) and f"`{name}`" not in runbook:
            problems.append(f"{METRICS_REFERENCE}: metric `{name}` (registered by the code) is not described")
    return problems


def alert_names(docs, documents, repo):
    """Every alert a document names is a rule of infra/prometheus."""
    known = facts.alerts(repo)
    types = facts.rust_types(repo)
    problems = []
    for path, number, _line, match in _mentions(docs, documents, re.compile(r"\b(Diagnosis[A-Z][A-Za-z0-9]*)\b")):
        name = match.group(1)
        if name not in known and name not in types:
            problems.append(f"{path}:{number}: alert `{name}` is not in "
                            + ", ".join(facts.ALERT_FILES))
    return problems


def _figure(results, key):
    value = results
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def bench_figures(docs, documents, repo):
    """Every marked figure equals the results file it names, rounded to the decimals written."""
    results = facts.bench_figures(repo)
    problems = []
    for path in documents:
        for number, line in enumerate(_read(docs, path).splitlines(), start=1):
            # A marker inside a `code span` is the convention shown, not a quote.
            line = re.sub(r"`[^`]*`", "", line)
            marked = list(FIGURE_MARKER.finditer(line))
            if len(marked) != len(ANY_MARKER.findall(line)):
                problems.append(f"{path}:{number}: a bench/soak marker not followed by a number")
            for match in marked:
                kind, key, written = match.groups()
                source = facts.BENCH_FILES[kind]
                value = _figure(results.get(kind, {}), key)
                if value is None:
                    problems.append(f"{path}:{number}: `{key}` is not a figure of {source}")
                    continue
                text = written.replace(" ", "").replace("−", "-")
                decimals = len(text.split(".", 1)[1]) if "." in text else 0
                if round(float(text), decimals) != round(float(value), decimals):
                    problems.append(f"{path}:{number}: {key} quoted as {written}, {source} says {value}")
    return problems


def _value_problem(spec, value):
    """Why `value` is refused by `spec`, or None (a placeholder such as `...` is not judged)."""
    if spec["min"] is not None:
        if not re.fullmatch(r"-?\d+", value):
            return None
        if not spec["min"] <= int(value) <= spec["max"]:
            return f"{value} is outside {spec['min']}–{spec['max']}"
    elif spec["allowed"] and spec["kind"] == "choice" and value.lower() not in spec["allowed"]:
        return f"{value!r} is not one of {', '.join(spec['allowed'])}"
    return None


def assignments(words, binary, schemas):
    """Problems with the `NAME=VALUE` words of one documented command: a variable of the
    project set for a binary that does not read it, or a value its spec refuses."""
    by_name = {}
    for specs in schemas.values():
        for spec in specs:
            by_name.setdefault(spec["name"], []).append(spec)
    problems = []
    for word in words:
        match = re.fullmatch(r"([A-Z][A-Z0-9_]+)=(.*)", word)
        if not match or match.group(1) not in by_name:
            continue
        name, value = match.groups()
        read = [s for s in schemas.get(binary, []) if s["name"] == name] if binary else by_name[name]
        if binary in schemas and not read:
            problems.append(f"{binary} does not read {name} (`{binary} config-schema`)")
            continue
        refusals = [_value_problem(spec, value) for spec in read]
        if value and all(refusals):
            problems.append(f"{name}={value}: {refusals[0]}")
    return problems
