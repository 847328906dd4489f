import unittest

from checkinfra import prometheus
from checkinfra.report import CheckError

SERIES = {"exporter_runs_total": {"result"}}


class PrometheusTest(unittest.TestCase):
    def test_each_rule_whose_expression_names_something_unknown_is_named(self):
        rules = {"groups": [{"name": "g", "rules": [
            {"alert": "ExportFailing", "expr": 'increase(exporter_runs_total{result="error"}[15m]) > 0'},
            {"alert": "ExportStalled", "expr": "absent(exporter_run_total)"},
            {"record": "job:runs:rate5m", "expr": "sum by (reslt) (rate(exporter_runs_total[5m]))"},
        ]}]}
        self.assertEqual(prometheus.alert_problems(rules, SERIES), [
            "ExportStalled: exporter_run_total is not a metric the binaries export",
            "job:runs:rate5m: groups or matches by reslt, which none of these metrics has"])

    def test_kubernetes_discovery_is_swapped_for_a_static_target_and_other_jobs_are_kept(self):
        config = {"scrape_configs": [
            {"job_name": "submit", "kubernetes_sd_configs": [{"role": "pod"}], "relabel_configs": []},
            {"job_name": "self", "static_configs": [{"targets": ["localhost:9090"]}]},
        ]}
        self.assertEqual(prometheus.without_kubernetes_discovery(config), {"scrape_configs": [
            {"job_name": "submit", "relabel_configs": [], "static_configs": [{"targets": ["example:2222"]}]},
            {"job_name": "self", "static_configs": [{"targets": ["localhost:9090"]}]},
        ]})

    def test_an_unknown_discovery_role_is_refused(self):
        config = {"scrape_configs": [{"job_name": "submit", "kubernetes_sd_configs": [{"role": "pods"}]}]}
        with self.assertRaisesRegex(CheckError, "job submit: kubernetes_sd_configs with an unknown role"):
            prometheus.without_kubernetes_discovery(config)


if __name__ == "__main__":
    unittest.main()
