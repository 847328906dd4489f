import unittest

import yaml

from checkinfra import kubernetes
from checkinfra.tests.support import TreeCase

LOCKED_DOWN = """\
      securityContext: {runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false,
                        capabilities: {drop: [ALL]}, seccompProfile: {type: RuntimeDefault}}
      resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {memory: 128Mi}}
"""
# The smallest set of objects the rules accept, as kustomize renders them.
MANIFESTS = f"""\
kind: ConfigMap
metadata: {{name: diagnosis-submit-config}}
data: {{SHUTDOWN_GRACE_SECONDS: "20", LOG_FORMAT: json}}
---
kind: Deployment
metadata: {{name: diagnosis-submit}}
spec:
  replicas: 2
  template:
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 30
      containers:
      - name: submit
        readinessProbe: {{httpGet: {{path: /services/ping}}}}
        livenessProbe: {{httpGet: {{path: /services/present}}}}
        envFrom:
        - {{configMapRef: {{name: diagnosis-submit-config-5t7h2m9c4k}}}}
        - {{secretRef: {{name: diagnosis-submit}}}}
        lifecycle: {{preStop: {{exec: {{command: [sleep, "5"]}}}}}}
{LOCKED_DOWN.replace("      ", "        ")}---
kind: HorizontalPodAutoscaler
metadata: {{name: diagnosis-submit}}
---
kind: ConfigMap
metadata: {{name: diagnosis-exporter-config}}
data: {{SIGNING_KEY_FILE: /keys/signing-key.pem, EXPOSURE_CONFIG_DIR: /config}}
---
kind: CronJob
metadata: {{name: diagnosis-exporter}}
spec:
  schedule: "*/5 * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          automountServiceAccountToken: false
          volumes:
          - {{name: key, secret: {{secretName: diagnosis-exporter-signing-key}}}}
          - {{name: config, configMap: {{name: diagnosis-exposure-configuration-8b2f6h4k9d}}}}
          containers:
          - name: exporter
            command: [diagnosis-exporter, run-once]
            volumeMounts: [{{name: key, mountPath: /keys}}, {{name: config, mountPath: /config}}]
{LOCKED_DOWN.replace("      ", "            ")}---
kind: ConfigMap
metadata: {{name: diagnosis-exposure-configuration-8b2f6h4k9d}}
data: {{"302.json": "{{}}\\n"}}
---
kind: Secret
metadata: {{name: diagnosis-submit}}
stringData: {{DATABASE_URL: <REPLACE with the database URL>}}
"""
KNOWN = {"SHUTDOWN_GRACE_SECONDS", "LOG_FORMAT", "SIGNING_KEY_FILE", "EXPOSURE_CONFIG_DIR", "DATABASE_URL"}


class KubernetesTest(TreeCase):
    def setUp(self):
        super().setUp()
        self.write("infra/exposure-configuration/302.json", "{}\n")
        self.objects = [("/tmp/work/k8s-base.yaml", d) for d in yaml.safe_load_all(MANIFESTS)]

    def one(self, kind, name):
        (obj,) = kubernetes.find(self.objects, kind, name)
        return obj

    def problems(self):
        return kubernetes.problems(self.objects, KNOWN, self.root)

    def test_manifests_that_keep_every_rule_pass(self):
        self.assertEqual(self.problems(), [])

    def test_every_container_is_locked_down(self):
        container = self.one("Deployment", "diagnosis-submit")["spec"]["template"]["spec"]["containers"][0]
        container["securityContext"]["readOnlyRootFilesystem"] = False
        container["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}
        del container["resources"]["limits"]
        kubernetes.pod_spec(self.one("CronJob", "diagnosis-exporter"))["automountServiceAccountToken"] = True
        where = "Deployment diagnosis-submit (/tmp/work/k8s-base.yaml)"
        self.assertEqual(self.problems(), [
            f"{where}: submit needs readOnlyRootFilesystem: true",
            f"{where}: submit must drop all capabilities",
            f"{where}: submit needs cpu and memory requests and a memory limit",
            "CronJob diagnosis-exporter (/tmp/work/k8s-base.yaml): automountServiceAccountToken must be false"])

    def test_the_submit_deployment_keeps_replicas_probes_and_a_grace_period_that_covers_the_drain(self):
        deployment = self.one("Deployment", "diagnosis-submit")
        deployment["spec"]["replicas"] = 1
        deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] = "/"
        deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 24
        self.assertEqual(self.problems(), [
            "diagnosis-submit: at least 2 replicas",
            "diagnosis-submit: the readiness probe must be /services/ping",
            "diagnosis-submit: terminationGracePeriodSeconds must cover the preStop sleep (5 s) "
            "plus SHUTDOWN_GRACE_SECONDS (20 s)"])

    def test_the_rendered_base_needs_its_autoscaler_and_the_configuration_from_its_config_map(self):
        self.objects = [o for o in self.objects if o[1]["kind"] != "HorizontalPodAutoscaler"]
        container = self.one("Deployment", "diagnosis-submit")["spec"]["template"]["spec"]["containers"][0]
        container["envFrom"] = container["envFrom"][1:]
        self.assertEqual(self.problems(), [
            "diagnosis-submit: configuration from the ConfigMap diagnosis-submit-config "
            "and the Secret diagnosis-submit",
            "diagnosis-submit: no HorizontalPodAutoscaler"])
        self.objects = [("infra/k8s/base/x.yaml", d) for _, d in self.objects]
        self.assertEqual(len(self.problems()), 1)

    def test_the_exporter_cronjob_runs_once_every_five_minutes_never_twice_at_once(self):
        cronjob = self.one("CronJob", "diagnosis-exporter")
        cronjob["spec"]["concurrencyPolicy"] = "Allow"
        kubernetes.pod_spec(cronjob)["containers"][0]["command"] = ["diagnosis-exporter"]
        self.one("ConfigMap", "diagnosis-exporter-config")["data"]["SIGNING_KEY_FILE"] = "/config/key.pem"
        self.assertEqual(self.problems(), [
            "exporter CronJob: concurrencyPolicy must be Forbid",
            "exporter CronJob: the command must be diagnosis-exporter run-once",
            "exporter CronJob: SIGNING_KEY_FILE must be a file of the Secret diagnosis-exporter-signing-key"])
        self.objects = [o for o in self.objects if o[1]["kind"] != "CronJob"]
        self.assertEqual(self.problems(), ["no CronJob diagnosis-exporter"])

    def test_secrets_are_placeholders_and_variables_are_ones_the_binaries_read(self):
        self.one("Secret", "diagnosis-submit")["stringData"]["DATABASE_URL"] = "postgres://real"
        self.one("Secret", "diagnosis-submit")["data"] = {"X": "eA=="}
        self.one("ConfigMap", "diagnosis-submit-config")["data"]["LOG_FROMAT"] = "json"
        self.assertEqual(self.problems(), [
            "Secret diagnosis-submit: DATABASE_URL is not a <REPLACE...> placeholder",
            "Secret diagnosis-submit: only stringData placeholders belong in a template",
            "ConfigMap diagnosis-submit-config: LOG_FROMAT is not a variable the binaries read"])

    def test_the_generated_exposure_configuration_holds_each_file_as_it_is(self):
        self.write("infra/exposure-configuration/302.json", "{ }\n")
        self.assertEqual(self.problems(), ["the exposure-configuration ConfigMap does not hold 302.json as it is"])


class LoadTest(TreeCase):
    def test_the_standalone_files_are_read_after_the_rendered_ones(self):
        self.write("rendered.yaml", "kind: Namespace\nmetadata: {name: diagnosis}\n---\n")
        for f in kubernetes.STANDALONE:
            self.write(f, "kind: Secret\nmetadata: {name: s}\n")
        self.assertEqual([f for f, _ in kubernetes.load(self.root, ["rendered.yaml"])],
                         ["rendered.yaml"] + kubernetes.STANDALONE)


if __name__ == "__main__":
    unittest.main()
