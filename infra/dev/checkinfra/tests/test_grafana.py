import json
import pathlib
import unittest

import yaml

from checkinfra import grafana
from checkinfra.tests.support import TreeCase

DS = {"type": "prometheus", "uid": "${datasource}"}
SERIES = {"exporter_runs_total": {"result"}}


def panel(pid, title, x, y, w=12, h=8, **extra):
    return {"id": pid, "title": title, "type": "timeseries", "datasource": dict(DS),
            "gridPos": {"h": h, "w": w, "x": x, "y": y}, "fieldConfig": {"defaults": {"unit": "short"}},
            "targets": [{"refId": "A", "expr": "sum(rate(exporter_runs_total[$__rate_interval]))",
                         "legendFormat": "{{result}}", "datasource": dict(DS)}], **extra}


def dashboard():
    return {
        "title": "Example", "uid": "example", "id": None, "schemaVersion": 39,
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
        "panels": [
            {"id": 1, "title": "Runs", "type": "row", "collapsed": False, "panels": [],
             "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0}},
            panel(2, "Passes", 0, 1),
            panel(3, "Failures", 12, 1),
        ],
    }


PATH = pathlib.PurePosixPath("infra/grafana/example.json")


class DashboardTest(unittest.TestCase):
    def problems(self, dash):
        return grafana.dashboard_problems(PATH, dash, {})

    def test_a_well_formed_dashboard_passes_and_is_counted(self):
        self.assertEqual(self.problems(dashboard()), ([], "infra/grafana/example.json: 3 panels, 1 rows"))

    def test_the_header_needs_a_uid_no_id_and_a_recent_schema(self):
        dash = dashboard()
        dash.update(uid="has spaces", id=7, schemaVersion=30)
        self.assertEqual(self.problems(dash)[0], [
            "uid must be 1 to 40 letters, digits, - or _, found 'has spaces'",
            "id must be null: Grafana gives a dashboard its id when it stores it",
            "schemaVersion must be a number, 36 or later (data sources referred to by uid)"])

    def test_panels_need_unique_ids_a_unit_the_variable_data_source_and_their_own_cells(self):
        dash = dashboard()
        dash["panels"][2]["id"] = 2
        dash["panels"][2]["gridPos"]["x"] = 6
        del dash["panels"][1]["fieldConfig"]["defaults"]["unit"]
        dash["panels"][1]["datasource"] = {"type": "prometheus", "uid": "PBFA97CFB590B2093"}
        self.assertEqual(self.problems(dash)[0], [
            "panel 2 ('Passes'): the data source must be the variable ${datasource}, "
            "found {'type': 'prometheus', 'uid': 'PBFA97CFB590B2093'}",
            "panel 2 ('Passes'): no unit (fieldConfig.defaults.unit)",
            "panel 2 ('Passes'): query A names another data source than its panel",
            "panel 2 ('Failures'): id 2 is also the id of 'Passes'",
            "panel 2 ('Passes') and panel 2 ('Failures') overlap"])

    def test_every_panel_sits_under_a_row(self):
        dash = dashboard()
        dash["panels"][0]["gridPos"]["y"] = 9
        dash["panels"][1]["gridPos"]["w"] = 30
        self.assertEqual(self.problems(dash)[0], [
            "panel 2 ('Passes'): gridPos {'h': 8, 'w': 30, 'x': 0, 'y': 1} is outside the 24 columns",
            "panel 2 ('Passes') and panel 3 ('Failures') overlap",
            "the first panel, 'Passes', is not under a row"])

    def test_the_operators_dashboard_keeps_its_four_rows(self):
        dash = dashboard()
        rows = ["Publication", "Exporter runs", "Submission API", "Database pool"]
        dash["panels"] = [{"id": i, "title": t, "type": "row", "gridPos": {"h": 1, "w": 24, "x": 0, "y": i}}
                          for i, t in enumerate(rows, 1)]
        path = pathlib.PurePosixPath("infra/grafana/diagnosis-server.json")
        self.assertEqual(grafana.dashboard_problems(path, dash, {}), ([], f"{path}: 4 panels, 4 rows"))
        dash["panels"].pop()
        self.assertEqual(grafana.dashboard_problems(path, dash, {})[0], [
            "rows must be ['Publication', 'Exporter runs', 'Submission API', 'Database pool'], "
            "found ['Publication', 'Exporter runs', 'Submission API']"])


class DashboardFilesTest(TreeCase):
    def test_each_file_is_named_with_its_problems_and_a_uid_is_unique(self):
        self.write("infra/grafana/a.json", json.dumps(dashboard()))
        self.write("infra/grafana/b.json", json.dumps(dashboard()))
        self.write("infra/grafana/c.json", "{")
        outcome = grafana.structure(self.root)
        self.assertFalse(outcome.ok)
        self.assertEqual(outcome.output[:2], ["infra/grafana/a.json: 3 panels, 1 rows",
                                              "infra/grafana/b.json: 3 panels, 1 rows"])
        self.assertEqual(outcome.output[2], "infra/grafana/b.json: uid example is also the uid of infra/grafana/a.json")
        self.assertTrue(outcome.output[3].startswith("infra/grafana/c.json: not JSON: "), outcome.output[3])

    def test_no_dashboard_is_a_failure(self):
        (self.root / "infra/grafana").mkdir(parents=True)
        self.assertEqual(grafana.structure(self.root).output, ["no dashboard (*.json) in infra/grafana"])

    def test_queries_name_dashboard_variables_exported_metrics_and_known_legend_labels(self):
        dash = dashboard()
        dash["panels"][2]["targets"][0].update(expr="sum by (result) (exporter_runs_total{job=\"$job\"})",
                                               legendFormat="{{ endpoint }}")
        dash["panels"].append({"id": 4, "title": "Folded", "type": "row", "collapsed": True,
                               "gridPos": {"h": 1, "w": 24, "x": 0, "y": 9},
                               "panels": [panel(5, "Inside", 0, 10, targets=[{"refId": "B", "expr": "exporter_run"}])]})
        self.write("infra/grafana/a.json", json.dumps(dash))
        found, rules = grafana.query_problems(self.root, SERIES)
        where = "infra/grafana/a.json: panel"
        self.assertEqual(found, [f"{where} 3 ('Failures'), query A: $job is not a variable of the dashboard",
                                 f"{where} 3 ('Failures'), query A: the legend shows endpoint, "
                                 "which none of the metrics has",
                                 f"{where} 5 ('Inside'), query B: exporter_run is not a metric the binaries export"])
        self.assertEqual(rules[0], {"record": "dashboard:panel_2_A", "expr": "sum(rate(exporter_runs_total[5m]))"})
        self.assertEqual([r["record"] for r in rules],
                         ["dashboard:panel_2_A", "dashboard:panel_3_A", "dashboard:panel_5_B"])

    def test_the_query_check_writes_the_rules_promtool_reads(self):
        self.write("infra/grafana/a.json", json.dumps(dashboard()))
        rules_file = self.root / "rules.yml"
        outcome = grafana.queries(self.root, lambda: SERIES, rules_file)
        self.assertEqual((outcome.ok, outcome.output), (True, ["2 queries"]))
        self.assertEqual(len(yaml.safe_load(rules_file.read_text())["groups"][0]["rules"]), 2)


SERVICES = """\
prometheus:
  profiles: [monitoring]
grafana:
  profiles: [monitoring]
  volumes:
    - ./grafana/provisioning:/etc/grafana/provisioning:ro
    - ./grafana/example.json:/etc/grafana/dashboards/example.json:ro
    - grafana-data:/var/lib/grafana
"""


class ProvisioningTest(TreeCase):
    """A compose profile that provisions Prometheus and the dashboard, broken one way at a time."""

    def setUp(self):
        super().setUp()
        self.write("infra/grafana/example.json", json.dumps(dashboard()))
        self.write("infra/grafana/provisioning/datasources/prometheus.yml", """\
            datasources:
              - {name: Prometheus, type: prometheus, url: "http://prometheus:9090", isDefault: true}
            """)
        self.write("infra/grafana/provisioning/dashboards/example.yml", """\
            providers:
              - {name: example, type: file, options: {path: /etc/grafana/dashboards}}
            """)
        self.services = yaml.safe_load(SERVICES)

    def problems(self):
        return grafana.provisioning_problems(self.root, self.services)

    def test_a_profile_that_provisions_the_data_source_and_every_dashboard_passes(self):
        self.assertEqual(self.problems(), [])
        self.services["grafana"]["volumes"][1] = "./grafana:/etc/grafana/dashboards:ro"
        self.assertEqual(self.problems(), [])

    def test_grafana_runs_in_the_monitoring_profile_and_mounts_what_exists(self):
        grafana_service = self.services["grafana"]
        grafana_service["profiles"] = ["default"]
        grafana_service["volumes"] = [v for v in grafana_service["volumes"] if "example.json" not in v]
        grafana_service["volumes"].append("./grafana/missing:/etc/grafana/other:ro")
        self.assertEqual(self.problems(), [
            "grafana must run in the profile monitoring, beside prometheus",
            "grafana mounts ./grafana/missing, which does not exist",
            "infra/grafana/example.json is not mounted into a path a dashboard provider reads "
            "(['/etc/grafana/dashboards'])"])

    def test_the_data_source_is_the_default_one_and_names_a_compose_service(self):
        self.write("infra/grafana/provisioning/datasources/prometheus.yml", """\
            datasources:
              - {name: Prometheus, type: prometheus, url: "http://prom:9090", isDefault: true}
            """)
        self.assertEqual(self.problems(),
                         ["the Prometheus data source's URL http://prom:9090 names no compose service"])
        self.write("infra/grafana/provisioning/datasources/prometheus.yml", """\
            datasources:
              - {name: Prometheus, type: prometheus, url: "http://prometheus:9090"}
            """)
        self.assertEqual(self.problems(), ["the provisioned Prometheus data source must be the default one "
                                           "(the dashboards' variable starts on it)"])

    def test_without_grafana_or_its_provisioning_nothing_is_shown(self):
        self.services["grafana"]["volumes"] = []
        self.assertEqual(self.problems(),
                         ["grafana must mount its provisioning directory on /etc/grafana/provisioning"])
        del self.services["grafana"]
        self.assertEqual(self.problems(), ["no service grafana in infra/compose.yaml"])


if __name__ == "__main__":
    unittest.main()
