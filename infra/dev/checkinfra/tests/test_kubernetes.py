import copy
import unittest

from checkinfra import kubernetes
from checkinfra.context import known_variables
from checkinfra.tests.support import REPO

BASE = sorted(str(p.relative_to(REPO)) for p in (REPO / "infra/k8s/base").glob("*.yaml")
              if p.name != "kustomization.yaml")
SHIPPED = kubernetes.load(REPO, BASE)
KNOWN = known_variables(REPO)
DEPLOYMENT = "Deployment diagnosis-submit (infra/k8s/base/submit-deployment.yaml)"


def objects():
    return copy.deepcopy(SHIPPED)


def one(objs, kind, name):
    (obj,) = kubernetes.find(objs, kind, name)
    return obj


def problems(objs):
    return kubernetes.problems(objs, KNOWN, REPO)


class KubernetesTest(unittest.TestCase):
    def test_the_shipped_base_passes(self):
        self.assertEqual(problems(objects()), [])

    def test_every_container_is_locked_down(self):
        objs = objects()
        container = one(objs, "Deployment", "diagnosis-submit")["spec"]["template"]["spec"]["containers"][0]
        container["securityContext"]["readOnlyRootFilesystem"] = False
        container["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}
        del container["resources"]["limits"]
        self.assertEqual(problems(objs), [
            f"{DEPLOYMENT}: submit needs readOnlyRootFilesystem: true",
            f"{DEPLOYMENT}: submit must drop all capabilities",
            f"{DEPLOYMENT}: submit needs cpu and memory requests and a memory limit"])

    def test_the_submit_deployment_keeps_replicas_probes_and_a_grace_period_that_covers_the_drain(self):
        objs = objects()
        deployment = one(objs, "Deployment", "diagnosis-submit")
        deployment["spec"]["replicas"] = 1
        deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] = "/"
        deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 10
        self.assertEqual(problems(objs)[:2], ["diagnosis-submit: at least 2 replicas",
                                              "diagnosis-submit: the readiness probe must be /services/ping"])
        self.assertRegex(problems(objs)[2], r"^diagnosis-submit: terminationGracePeriodSeconds must cover the "
                                            r"preStop sleep \(\d+ s\) plus SHUTDOWN_GRACE_SECONDS \(\d+ s\)$")

    def test_the_rendered_base_needs_its_autoscaler(self):
        objs = [(f.replace("infra/k8s/base/submit-deployment.yaml", "/tmp/k8s-base.yaml"), d)
                for f, d in objects() if d["kind"] != "HorizontalPodAutoscaler"]
        self.assertIn("diagnosis-submit: no HorizontalPodAutoscaler", problems(objs))

    def test_the_exporter_cronjob_runs_once_every_five_minutes_never_twice_at_once(self):
        objs = objects()
        cronjob = one(objs, "CronJob", "diagnosis-exporter")
        cronjob["spec"]["concurrencyPolicy"] = "Allow"
        kubernetes.pod_spec(cronjob)["containers"][0]["command"] = ["diagnosis-exporter"]
        self.assertEqual(problems(objs), ["exporter CronJob: concurrencyPolicy must be Forbid",
                                          "exporter CronJob: the command must be diagnosis-exporter run-once"])
        self.assertEqual(problems([o for o in objs if o[1]["kind"] != "CronJob"]), ["no CronJob diagnosis-exporter"])

    def test_secrets_are_placeholders_and_variables_are_ones_the_binaries_read(self):
        objs = objects()
        one(objs, "Secret", "diagnosis-submit")["stringData"]["KEY_CLAIM_TOKEN"] = "a-real-token"
        one(objs, "ConfigMap", "diagnosis-submit-config")["data"]["LOG_FROMAT"] = "json"
        self.assertEqual(problems(objs), [
            "Secret diagnosis-submit: KEY_CLAIM_TOKEN is not a <REPLACE...> placeholder",
            "ConfigMap diagnosis-submit-config: LOG_FROMAT is not a variable the binaries read"])

    def test_the_generated_exposure_configuration_holds_each_file_as_it_is(self):
        files = sorted((REPO / "infra/exposure-configuration").glob("*.json"))
        data = {p.name: p.read_text() for p in files}
        generated = {"kind": "ConfigMap", "metadata": {"name": "diagnosis-exposure-configuration-abc"}, "data": data}
        self.assertEqual(problems(objects() + [("x", generated)]), [])
        data[files[0].name] = data[files[0].name].replace(" ", "")
        self.assertEqual(problems(objects() + [("x", generated)]),
                         [f"the exposure-configuration ConfigMap does not hold {files[0].name} as it is"])


if __name__ == "__main__":
    unittest.main()
