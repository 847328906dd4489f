"""What check-infra prints: section headers, one line per check, and the summary.

A check's own output is shown, indented, only when the check fails. The report decides nothing
about what passes (the checks do) and never ends the process (`__main__` does).
"""
import subprocess
import traceback
from dataclasses import dataclass

INDENT = "        "


class CheckError(Exception):
    """The checker cannot go on (source it does not understand); the check fails with this text."""


@dataclass
class Outcome:
    """Whether one check passed, and what it printed (shown, indented, when it failed)."""

    ok: bool
    output: list

    @classmethod
    def of(cls, problems, before=(), after=()):
        """A check that passes when it found no problems; notes go before or after them."""
        return cls(not problems, [*before, *problems, *after])

    def lines(self):
        """The printed lines one by one, as a terminal shows them."""
        text = "\n".join(str(line) for line in self.output)
        return text.split("\n") if self.output else []

    def last_line(self):
        lines = self.lines()
        return lines[-1] if lines else ""


def run_command(argv, cwd=None, stdout=None):
    """Runs argv as an Outcome whose output is its standard output and error, in one stream; or,
    when `stdout` (an open file) is given, only its standard error, its output going to the file."""
    try:
        if stdout is None:
            done = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
            text = done.stdout
        else:
            done = subprocess.run(argv, cwd=cwd, stdout=stdout, stderr=subprocess.PIPE, check=False)
            text = done.stderr
    except OSError as e:
        return Outcome(False, [f"{argv[0]}: {e.strerror or e}"])
    text = text.decode("utf-8", errors="replace")
    if text.endswith("\n"):
        text = text[:-1]
    return Outcome(done.returncode == 0, [text] if text else [])


class Report:
    """The checks passed, not run and failed, as they are printed."""

    def __init__(self, out=print):
        self.passed, self.skipped, self.failed = [], [], []
        self._out = out

    def section(self, title):
        self._out(f"\n==> {title}")

    def note(self, line):
        self._out(f"{INDENT}{line}")

    def pass_(self, title):
        self.passed.append(title)
        self._out(f"  ok    {title}")

    def skip(self, title):
        self.skipped.append(title)
        self._out(f"  SKIP  {title}")

    def fail(self, title, outcome=None):
        self.failed.append(title)
        self._out(f"  FAIL  {title}")
        for line in outcome.lines() if outcome else []:
            self._out(f"{INDENT}{line}")

    def record(self, title, outcome):
        """Prints a check's line (and its output if it failed); returns the outcome."""
        if outcome.ok:
            self.pass_(title)
        else:
            self.fail(title, outcome)
        return outcome

    def check(self, title, run):
        """Runs `run()` (which returns an Outcome) as the check `title`; an exception fails it."""
        try:
            outcome = run()
        except CheckError as e:
            outcome = Outcome(False, [str(e)])
        except Exception:  # a check that breaks on odd input fails, showing where, and the run goes on
            outcome = Outcome(False, [traceback.format_exc().rstrip("\n")])
        return self.record(title, outcome)

    def command(self, title, argv, cwd=None):
        """Runs argv quietly as the check `title`; its output is shown if it fails."""
        return self.record(title, run_command(argv, cwd))

    def summary(self, not_run):
        """Prints the summary; returns the exit status (1 if a check failed)."""
        self.section("Summary")
        skipped = self.skipped + list(not_run)
        self._out(f"{len(self.passed)} checks passed, {len(self.failed)} failed, {len(skipped)} not run here:")
        for item in skipped:
            self._out(f"  - {item}")
        if self.failed:
            self._out("FAILED:")
            for item in self.failed:
                self._out(f"  - {item}")
            return 1
        self._out("infra checks passed")
        return 0
