"""Runs every area's checks in order and prints the summary; the exit status is 1 if any failed.

Started by infra/dev/check-infra, which installs the tools and passes the ones it found; run
from the repository root. It writes only to its scratch directory, which it removes.
"""
import argparse
import pathlib
import sys
import tempfile

from . import compose, docker, grafana, kubernetes, prometheus, scripts, security, terraform, yamlfiles
from .context import Context
from .report import Report

AREAS = (yamlfiles, docker, compose, kubernetes, terraform, prometheus, grafana, security, scripts)
NOT_RUN = (
    "docker build / docker compose up: no container engine is assumed",
    "kubectl apply: no cluster is assumed",
)


def main(argv):
    parser = argparse.ArgumentParser(prog="checkinfra", description="Checks the deployment files under infra/.")
    for tool in ("promtool", "terraform", "kubectl", "shellcheck"):
        parser.add_argument(f"--{tool}", default="", metavar="PATH",
                            help=f"the {tool} to run (none: its checks are skipped)")
    args = parser.parse_args(argv)
    report = Report(out=lambda line: print(line, flush=True))
    with tempfile.TemporaryDirectory(prefix="check-infra.") as work:
        ctx = Context(root=pathlib.Path.cwd(), work=pathlib.Path(work), promtool=args.promtool,
                      terraform=args.terraform, kubectl=args.kubectl, shellcheck=args.shellcheck)
        for area in AREAS:
            area.run(report, ctx)
        return report.summary(NOT_RUN)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
