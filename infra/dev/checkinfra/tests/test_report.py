import unittest

from checkinfra.report import CheckError, Outcome, Report


def report():
    lines = []
    return Report(out=lines.append), lines


class ReportTest(unittest.TestCase):
    def test_a_passing_check_shows_one_line_and_a_failing_one_its_output_indented(self):
        r, lines = report()
        r.check("good", lambda: Outcome.of([], before=["hidden note"]))
        r.check("bad", lambda: Outcome.of(["first problem", "second\nline"]))
        self.assertEqual(lines, ["  ok    good", "  FAIL  bad", "        first problem", "        second",
                                 "        line"])

    def test_a_check_that_raises_fails_with_its_traceback_and_the_run_goes_on(self):
        r, lines = report()
        r.check("breaks", lambda: {}["missing"])
        r.check("after", lambda: Outcome.of([]))
        self.assertEqual(lines[0], "  FAIL  breaks")
        self.assertEqual(lines[1], "        Traceback (most recent call last):")
        self.assertEqual(lines[-2], "        KeyError: 'missing'")
        self.assertEqual(lines[-1], "  ok    after")

    def test_a_check_error_fails_the_check_with_its_message(self):
        r, lines = report()

        def cannot():
            raise CheckError("the checker cannot read this")

        r.check("stops", cannot)
        self.assertEqual(lines, ["  FAIL  stops", "        the checker cannot read this"])

    def test_a_command_shows_its_output_and_error_only_when_it_fails(self):
        r, lines = report()
        r.command("quiet", ["sh", "-c", "echo out; echo err >&2"])
        r.command("loud", ["sh", "-c", "echo out; echo err >&2; exit 3"])
        r.command("missing", ["/nonexistent/tool"])
        self.assertEqual(lines, ["  ok    quiet", "  FAIL  loud", "        out", "        err",
                                 "  FAIL  missing", "        /nonexistent/tool: No such file or directory"])

    def test_the_summary_counts_and_lists_what_was_not_run_and_what_failed(self):
        r, lines = report()
        r.pass_("a")
        r.skip("b")
        r.fail("c")
        del lines[:]
        self.assertEqual(r.summary(["d"]), 1)
        self.assertEqual(lines, ["\n==> Summary", "1 checks passed, 1 failed, 2 not run here:", "  - b", "  - d",
                                 "FAILED:", "  - c"])
        r, lines = report()
        r.pass_("a")
        self.assertEqual(r.summary([]), 0)
        self.assertEqual(lines[-1], "infra checks passed")

    def test_the_last_line_is_the_last_printed_line(self):
        self.assertEqual(Outcome.of(["x\ny"], after=["3 files"]).last_line(), "3 files")
        self.assertEqual(Outcome.of([]).last_line(), "")


if __name__ == "__main__":
    unittest.main()
