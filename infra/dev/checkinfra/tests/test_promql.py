import unittest

from checkinfra import promql
from checkinfra.report import CheckError
from checkinfra.tests.support import TreeCase

SOURCE = '''
const RUNS: &str = "exporter_runs_total";
fn record() {
    counter!("submit_requests_total", "endpoint" => endpoint, "outcome" => outcome).increment(1);
    counter!(RUNS, "result" => "ok").increment(1);
    gauge!(RUNS).set(1.0);
    histogram!("submit_request_duration_seconds", "endpoint" => e).record(d);
    histogram!("export_keys", "kind" => k).record(n);
}

#[cfg(test)]
mod tests {
    fn t() { counter!("only_in_tests_total").increment(1); }
}
'''
SERIES = promql.series_in(SOURCE, "x.rs")


class SeriesTest(unittest.TestCase):
    def test_the_macros_give_counters_gauges_histograms_and_summaries_with_their_labels(self):
        self.assertEqual(SERIES, {
            "submit_requests_total": {"endpoint", "outcome"},
            "exporter_runs_total": {"result"},
            "submit_request_duration_seconds_bucket": {"endpoint", "le"},
            "submit_request_duration_seconds_sum": {"endpoint"},
            "submit_request_duration_seconds_count": {"endpoint"},
            "export_keys": {"kind", "quantile"},
            "export_keys_sum": {"kind"},
            "export_keys_count": {"kind"},
        })

    def test_a_name_the_reader_cannot_resolve_stops_the_check_naming_the_place(self):
        with self.assertRaisesRegex(CheckError, r"^x\.rs:2: a metric whose name is neither"):
            promql.series_in('fn f() {\n    counter!(format!("a_{}", b)).increment(1);\n}\n', "x.rs")



class ExportedTest(TreeCase):
    def test_every_crate_of_the_binaries_is_read(self):
        self.write("core/src/telemetry.rs", 'Matcher::Suffix("_duration_seconds".to_owned())\n'
                                            'gauge!("db_pool_connections", "state" => s).set(n);\n')
        self.write("submit/src/handlers/claim.rs", 'counter!("submit_claims_total").increment(1);\n')
        self.write("exporter/src/main.rs", SOURCE)
        self.write("tests/src/app.rs", 'counter!("test_only_total").increment(1);\n')
        series = promql.exported(self.root)
        self.assertEqual(series["db_pool_connections"], {"state"})
        self.assertEqual(series["submit_claims_total"], set())
        self.assertEqual(series["exporter_runs_total"], {"result"})
        self.assertNotIn("test_only_total", series)

    def test_a_changed_histogram_rule_stops_the_check(self):
        self.write("core/src/telemetry.rs", "// no buckets\n")
        with self.assertRaisesRegex(CheckError, r"^core/src/telemetry.rs no longer gives buckets"):
            promql.exported(self.root)


class ProblemsTest(unittest.TestCase):
    def problems(self, expr):
        return promql.problems(expr, SERIES)

    def test_known_metrics_labels_external_series_and_scrape_labels_pass(self):
        self.assertEqual(self.problems(
            'sum by (endpoint, pod) (rate(submit_requests_total{outcome="ok", job="submit"}[5m]))'
            ' / on (endpoint) group_left sum by (endpoint) (rate(submit_request_duration_seconds_count[5m]))'
            ' and time() - kube_cronjob_status_last_successful_time{cronjob="x"} > 600 or up == 0'), [])

    def test_an_unknown_metric_or_label_is_named(self):
        self.assertEqual(self.problems('rate(submit_request_total[5m]) + rate(exporter_runs_total{outcom="ok"}[5m])'),
                         ["submit_request_total is not a metric the binaries export",
                          "exporter_runs_total has no label outcom"])

    def test_grouping_by_a_label_no_metric_has_is_named(self):
        self.assertEqual(self.problems("sum by (instance) (exporter_runs_total)"),
                         ["groups or matches by instance, which none of these metrics has"])

    def test_an_expression_that_does_not_parse_or_names_no_metric_is_refused(self):
        self.assertEqual(len(self.problems("sum(rate(x[5m])")), 1)
        self.assertTrue(self.problems("sum(rate(x[5m])")[0].startswith("does not parse: "))
        self.assertEqual(self.problems('{endpoint="claim"}'), ["a selector that does not name its metric"])
        self.assertEqual(self.problems('{__name__="exporter_runs_total"}'), [])

    def test_labels_are_every_label_any_series_has_plus_the_scrape_labels(self):
        self.assertEqual(promql.labels({"a": {"x"}}),
                         {"x", "cronjob", "job_name", "condition", "reason", "job", "namespace", "pod"})


if __name__ == "__main__":
    unittest.main()
