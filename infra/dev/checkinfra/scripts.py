"""The checker itself: shellcheck on the wrapper script, pyflakes and the unit tests on this
package.

It runs the tools on infra/dev; it changes no file.
"""
import sys

PACKAGE = "infra/dev/checkinfra"


def run(report, ctx):
    report.section("Scripts")
    if ctx.shellcheck:
        report.command("shellcheck infra/dev/check-infra", [ctx.shellcheck, "infra/dev/check-infra"], cwd=ctx.root)
    else:
        report.skip("shellcheck infra/dev/check-infra (no shellcheck here)")
    report.command(f"pyflakes {PACKAGE}", [sys.executable, "-m", "pyflakes", PACKAGE], cwd=ctx.root)
    report.command(f"unit tests of the checks (python -m unittest, {PACKAGE}/tests)",
                   [sys.executable, "-m", "unittest", "discover", "--quiet", "--start-directory", f"{PACKAGE}/tests",
                    "--top-level-directory", "infra/dev"], cwd=ctx.root)
