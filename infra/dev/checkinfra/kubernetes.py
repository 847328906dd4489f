"""infra/k8s: kustomize renders the overlays, every object is valid for the Kubernetes API
versions supported, and the project's rules hold (non-root, read-only root, probes, grace
period, CronJob, Secrets as placeholders, variables the binaries read).

It renders and reads manifests; it never talks to a cluster.
"""
import pathlib
import re

import yaml

from .report import Outcome, run_command

# Kubernetes versions the manifests are validated against: the oldest supported, the newest known.
K8S_VERSIONS = ("1.30.0", "1.37.0")
OVERLAYS = ("base", "scheduled-exporter")
CONFIG_MAPS = ("diagnosis-submit-config", "diagnosis-exporter-config")
STANDALONE = ["infra/k8s/secrets.template.yaml", "infra/k8s/migrate-job.yaml"]


def load(root, files):
    """(file, object) of every document of the rendered manifests and the standalone files."""
    objects = []
    for f in list(files) + STANDALONE:
        objects += [(f, d) for d in yaml.safe_load_all((root / f).read_text()) if d]
    return objects


def find(objects, kind, name):
    return [d for _, d in objects if d["kind"] == kind and d["metadata"]["name"] == name]


def pod_spec(obj):
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if obj["kind"] in ("Deployment", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def container_problems(where, c, pod_sc):
    errors = []
    sc = c.get("securityContext", {})
    if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
        errors.append(f"{where}: {c['name']} must run as non-root")
    if sc.get("readOnlyRootFilesystem") is not True:
        errors.append(f"{where}: {c['name']} needs readOnlyRootFilesystem: true")
    if sc.get("allowPrivilegeEscalation") is not False:
        errors.append(f"{where}: {c['name']} needs allowPrivilegeEscalation: false")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        errors.append(f"{where}: {c['name']} must drop all capabilities")
    if (sc.get("seccompProfile") or pod_sc.get("seccompProfile", {})).get("type") != "RuntimeDefault":
        errors.append(f"{where}: {c['name']} needs the RuntimeDefault seccomp profile")
    res = c.get("resources", {})
    if "cpu" not in res.get("requests", {}) or "memory" not in res.get("requests", {}) \
            or "memory" not in res.get("limits", {}):
        errors.append(f"{where}: {c['name']} needs cpu and memory requests and a memory limit")
    return errors


def pod_problems(objects):
    errors = []
    for f, obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        where = f"{obj['kind']} {obj['metadata']['name']} ({f})"
        if spec.get("automountServiceAccountToken") is not False:
            errors.append(f"{where}: automountServiceAccountToken must be false")
        for c in spec["containers"]:
            errors += container_problems(where, c, spec.get("securityContext", {}))
    return errors


def submit_problems(objects):
    errors = []
    submit_config = (find(objects, "ConfigMap", "diagnosis-submit-config") or [{}])[0].get("data", {})
    for dep in find(objects, "Deployment", "diagnosis-submit"):
        spec = dep["spec"]["template"]["spec"]
        c = spec["containers"][0]
        if dep["spec"].get("replicas", 1) < 2:
            errors.append("diagnosis-submit: at least 2 replicas")
        if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/services/ping":
            errors.append("diagnosis-submit: the readiness probe must be /services/ping")
        if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/services/present":
            errors.append("diagnosis-submit: the liveness probe must be /services/present")
        sources = {(k, v["name"]) for e in c.get("envFrom", []) for k, v in e.items()}
        # kustomize's configMapGenerator suffixes the name with a hash of the content.
        unhashed = {(k, re.sub(r"-[a-z0-9]{10}$", "", n)) for k, n in sources}
        if ("configMapRef", "diagnosis-submit-config") not in unhashed \
                or ("secretRef", "diagnosis-submit") not in sources:
            errors.append("diagnosis-submit: configuration from the ConfigMap diagnosis-submit-config "
                          "and the Secret diagnosis-submit")
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        sleep = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0
        grace = int(submit_config.get("SHUTDOWN_GRACE_SECONDS", 20))
        if spec.get("terminationGracePeriodSeconds", 30) < sleep + grace:
            errors.append(f"diagnosis-submit: terminationGracePeriodSeconds must cover the preStop sleep ({sleep} s) "
                          f"plus SHUTDOWN_GRACE_SECONDS ({grace} s)")
        if dep in [d for f, d in objects if f.endswith("k8s-base.yaml")] \
                and not find(objects, "HorizontalPodAutoscaler", "diagnosis-submit"):
            errors.append("diagnosis-submit: no HorizontalPodAutoscaler")
    return errors


def cronjob_problems(objects):
    cronjobs = find(objects, "CronJob", "diagnosis-exporter")
    errors = [] if cronjobs else ["no CronJob diagnosis-exporter"]
    config = (find(objects, "ConfigMap", "diagnosis-exporter-config") or [{}])[0].get("data", {})
    for cj in cronjobs:
        if cj["spec"].get("schedule") != "*/5 * * * *":
            errors.append("exporter CronJob: schedule must be */5 * * * *")
        if cj["spec"].get("concurrencyPolicy") != "Forbid":
            errors.append("exporter CronJob: concurrencyPolicy must be Forbid")
        spec = pod_spec(cj)
        c = spec["containers"][0]
        if c.get("command") != ["diagnosis-exporter", "run-once"]:
            errors.append("exporter CronJob: the command must be diagnosis-exporter run-once")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        key_file = config.get("SIGNING_KEY_FILE", "")
        key_volume = volumes.get(mounts.get(str(pathlib.PurePosixPath(key_file).parent)), {})
        if key_volume.get("secret", {}).get("secretName") != "diagnosis-exporter-signing-key":
            errors.append("exporter CronJob: SIGNING_KEY_FILE must be a file of the Secret "
                          "diagnosis-exporter-signing-key")
        config_volume = volumes.get(mounts.get(config.get("EXPOSURE_CONFIG_DIR", "")), {})
        if not config_volume.get("configMap", {}).get("name", "").startswith("diagnosis-exposure-configuration"):
            errors.append("exporter CronJob: EXPOSURE_CONFIG_DIR must be the exposure-configuration ConfigMap")
    return errors


def content_problems(objects, known, root):
    """The generated exposure configuration, the Secret templates, and the variables set."""
    errors = []
    # The generated ConfigMap holds every file of infra/exposure-configuration, byte for byte.
    for cm in [d for _, d in objects
               if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("diagnosis-exposure-configuration")]:
        for path in (root / "infra/exposure-configuration").glob("*.json"):
            if cm.get("data", {}).get(path.name) != path.read_text():
                errors.append(f"the exposure-configuration ConfigMap does not hold {path.name} as it is")
    # Secrets are templates: every value is a placeholder, never a secret.
    for _, obj in objects:
        if obj["kind"] == "Secret":
            for key, value in obj.get("stringData", {}).items():
                if "<REPLACE" not in str(value):
                    errors.append(f"Secret {obj['metadata']['name']}: {key} is not a <REPLACE...> placeholder")
            if obj.get("data"):
                errors.append(f"Secret {obj['metadata']['name']}: only stringData placeholders belong in a template")
    for _, obj in objects:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] in CONFIG_MAPS:
            names = obj.get("data", {})
        elif obj["kind"] == "Secret" and obj["metadata"]["name"] in ("diagnosis-submit", "diagnosis-exporter"):
            names = obj.get("stringData", {})
        else:
            continue
        for name in names:
            if not name.startswith("AWS_") and name not in known:
                errors.append(f"{obj['kind']} {obj['metadata']['name']}: {name} is not a variable the binaries read")
    return errors


def problems(objects, known, root):
    return (pod_problems(objects) + submit_problems(objects) + cronjob_problems(objects)
            + content_problems(objects, known, root))


def render(report, ctx):
    """The manifests to check: kustomize's renderings, or without kubectl the base's files."""
    if not ctx.kubectl:
        report.skip("kustomize rendering (no kubectl here): the base's files are validated one by one instead")
        base = sorted(str(p.relative_to(ctx.root)) for p in (ctx.root / "infra/k8s/base").glob("*.yaml"))
        return [f for f in base if pathlib.Path(f).name != "kustomization.yaml"] + [
            "infra/k8s/scheduled-exporter/exporter-deployment.yaml"]
    rendered = []
    for overlay in OVERLAYS:
        out = ctx.work / f"k8s-{overlay}.yaml"
        title = f"kustomize renders infra/k8s/{overlay}"
        with open(out, "wb") as stdout:
            outcome = run_command([ctx.kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone",
                                   f"infra/k8s/{overlay}"], cwd=ctx.root, stdout=stdout)
        if report.record(title, outcome).ok:
            rendered.append(str(out))
    return rendered


def run(report, ctx):
    report.section("Kubernetes (infra/k8s)")
    ctx.rendered = render(report, ctx)
    if ctx.rendered:
        for version in K8S_VERSIONS:
            report.command(f"Kubernetes {version} API schemas (strict): rendered manifests, secrets template, "
                           "migration Job",
                           [ctx.venv_tool("kubernetes-validate"), "--strict", "--quiet", "-k", version,
                            *ctx.rendered, *STANDALONE], cwd=ctx.root)
    report.check("Kubernetes: security context, probes, grace period, CronJob, Secrets, variables",
                 lambda: Outcome.of(problems(load(ctx.root, ctx.rendered), ctx.known, ctx.root)))
