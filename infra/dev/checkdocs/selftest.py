"""`infra/dev/check-docs --self-test`: each check reports an error planted in a copy of the
documents, and the unchanged copy passes.

Every case copies the repository's Markdown files and .env.example into a temporary folder,
plants one error, runs `check-docs --docs-root COPY` and requires a non-zero exit and a line
naming the error. The code, the rule files, the results and the binaries are the repository's.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

# (what is planted, file, text replaced, replacement, what the report must contain)
CASES = [
    ("wrong default", "README.md",
     "| `DATABASE_POOL_SIZE` | `16` |", "| `DATABASE_POOL_SIZE` | `17` |",
     "`DATABASE_POOL_SIZE`: default '17' in the table, '16' in the code"),
    ("wrong range", "README.md",
     "| `INITIAL_REMAINING_KEYS` | `43` | 1–1000:", "| `INITIAL_REMAINING_KEYS` | `43` | 1–999:",
     "`INITIAL_REMAINING_KEYS`: range 1–1000 (the code's) is not in the row"),
    ("wrong accepted word", "README.md",
     "| `LOG_FORMAT` | `json` | `json` or `pretty`", "| `LOG_FORMAT` | `json` | `json` or `text`",
     "`LOG_FORMAT`: accepted value `pretty` (the code's) is not in the row"),
    ("variable missing from the table", "README.md",
     "| `PAD_MIN_KEYS` |", "| `PAD_MIN_KEY` |",
     "the configuration table lacks `PAD_MIN_KEYS` under common or exporter"),
    ("wrong range in .env.example", ".env.example",
     "# 0-600\nSHUTDOWN_GRACE_SECONDS", "# 0-60\nSHUTDOWN_GRACE_SECONDS",
     "range 0-60 of SHUTDOWN_GRACE_SECONDS; the code's: 0-600"),
    ("unknown metric", "infra/RUNBOOK.md",
     "## 2. Reading the metrics\n", "## 2. Reading the metrics\n\n`exporter_passes_total` counts passes.\n",
     "metric `exporter_passes_total` is not registered by any binary"),
    ("registered metric the runbook does not describe", "infra/RUNBOOK.md",
     "`submit_keypairs_recovered_total`", "`submit_keypairs_regenerated`",
     "infra/RUNBOOK.md: metric `submit_keypairs_recovered_total` (registered by the code) is not described"),
    ("unknown alert", "infra/DEPLOYMENT.md",
     "| `DiagnosisSubmitDown` |", "| `DiagnosisSubmitGone` |",
     "alert `DiagnosisSubmitGone` is not in infra/prometheus/alerts.yml"),
    ("bad command outside the old four documents", "tests/bench/README.md",
     "## Latest results\n",
     "## Latest results\n\n```sh\ntarget/release/diagnosis-exporter run-once --keys 10\n```\n",
     "unknown option --keys"),
    ("value out of range in a documented command", "infra/RUNBOOK.md",
     "## 2. Reading the metrics\n", "## 2. Reading the metrics\n\n```sh\nDATABASE_POOL_SIZE=2000 diagnosis-submit\n```\n",
     "DATABASE_POOL_SIZE=2000: 2000 is outside 1–1000"),
    ("variable set for a binary that does not read it", "infra/DEPLOYMENT.md",
     "## 2. Compose\n", "## 2. Compose\n\n`KEY_CLAIM_TOKEN=x diagnosis-exporter run-once`\n",
     "diagnosis-exporter does not read KEY_CLAIM_TOKEN"),
    ("value the code refuses in .env.example", ".env.example",
     "LOG_FORMAT=json", "LOG_FORMAT=text",
     ".env.example:25: LOG_FORMAT=text: 'text' is not one of json, pretty"),
    ("bad subcommand outside the old four documents", "infra/cdn/README.md",
     "## Tests\n", "## Tests\n\n`diagnosis-submit serve-forever`\n",
     "unknown subcommand 'serve-forever'"),
]


def figure_cases(repo):
    """The figure cases, quoting the committed results as the documents do (they change with
    every run of the benchmark or the soak): README.md's bench figure replaced by a value the
    results do not hold, and a soak figure that is not the result's added to README.md."""
    with open(os.path.join(repo, "tests/bench/results.json"), encoding="utf-8") as f:
        rss = json.load(f)["export_peak_rss_mib_1m"]
    with open(os.path.join(repo, "tests/bench/soak.json"), encoding="utf-8") as f:
        growth = json.load(f)["rss_growth_pct"]
    return [
        ("wrong bench figure", "README.md",
         f"<!-- bench: export_peak_rss_mib_1m -->{rss:.1f}",
         f"<!-- bench: export_peak_rss_mib_1m -->{rss + 10:.1f}",
         f"export_peak_rss_mib_1m quoted as {rss + 10:.1f}, tests/bench/results.json says {rss}"),
        ("wrong soak figure", "README.md",
         "## Soak\n",
         f"## Soak\n\nThe RSS grew by <!-- soak: rss_growth_pct -->{growth + 10:.2f} %.\n",
         f"rss_growth_pct quoted as {growth + 10:.2f}, tests/bench/soak.json says"),
    ]


def copy_documents(repo, into):
    listed = subprocess.run(["git", "ls-files", "*.md", ".env.example"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout.split()
    for path in listed:
        target = os.path.join(into, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.join(repo, path), target)


def check(script, docs):
    done = subprocess.run([sys.executable, script, "--docs-root", docs], capture_output=True,
                          text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def run(repo, script):
    failed = 0
    with tempfile.TemporaryDirectory(prefix="check-docs-self-test-") as scratch:
        clean = os.path.join(scratch, "clean")
        copy_documents(repo, clean)
        status, output = check(script, clean)
        if status != 0:
            print(f"self-test: the unchanged copy fails (exit {status}):\n{output}")
            return 1
        print("self-test: the unchanged copy passes")
        cases = CASES + figure_cases(repo)
        for number, (what, path, old, new, expected) in enumerate(cases):
            docs = os.path.join(scratch, f"case-{number}")
            shutil.copytree(clean, docs)
            full = os.path.join(docs, path)
            with open(full, encoding="utf-8") as f:
                text = f.read()
            if old not in text:
                print(f"self-test: {what}: {path} no longer holds {old!r}; update CASES")
                failed += 1
                continue
            with open(full, "w", encoding="utf-8") as f:
                f.write(text.replace(old, new))
            status, output = check(script, docs)
            reported = [line.strip() for line in output.splitlines() if expected in line]
            if status == 0 or not reported:
                print(f"self-test: {what} in {path}: NOT reported (exit {status})\n{output}")
                failed += 1
            else:
                print(f"self-test: {what} in {path}: reported: {reported[0]}")
    print(f"self-test: {len(cases) - failed} of {len(cases)} planted errors reported")
    return 1 if failed else 0
