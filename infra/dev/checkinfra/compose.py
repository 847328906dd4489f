"""infra/compose.yaml: the Compose Specification schema, and the project's rules for its
services, images, healthchecks, dependencies, database users and variables.

It reads the file; it never starts a container.
"""
import pathlib

import yaml

from .report import Outcome

COMPOSE = "infra/compose.yaml"
SERVICES = ("postgres", "minio", "minio-init", "keygen", "submit", "exporter")


class _Findings(list):
    def need(self, cond, message):
        if not cond:
            self.append(message)

    def depends(self, services, service, on, condition):
        cond = services[service].get("depends_on", {}).get(on, {}).get("condition")
        self.need(cond == condition, f"{service} must depend on {on} with condition {condition}")


def _service_problems(services, root, errors):
    errors.need(str(services["postgres"].get("image", "")).startswith("postgres:15"), "postgres must run postgres:15")
    errors.need("mc mb" in str(services["minio-init"].get("command")), "minio-init must create the bucket with mc mb")
    errors.need("diagnosis-exporter keygen" in str(services["keygen"].get("command")),
                "keygen must run diagnosis-exporter keygen")
    for name in ("postgres", "minio", "submit", "exporter"):
        errors.need("healthcheck" in services[name], f"service {name} has no healthcheck")
    for name in ("submit", "exporter", "keygen"):
        build = services[name].get("build", {})
        errors.need(build.get("dockerfile") == "infra/docker/Dockerfile",
                    f"service {name} must build infra/docker/Dockerfile")
        context = (root / "infra" / build.get("context", ".")).resolve()
        errors.need(context == root.resolve(), f"service {name} must build from the repository root")
        errors.need(services[name].get("read_only") is True, f"service {name} must have a read-only root filesystem")
    errors.depends(services, "submit", "postgres", "service_healthy")
    errors.depends(services, "exporter", "postgres", "service_healthy")
    errors.depends(services, "exporter", "minio-init", "service_completed_successfully")
    errors.depends(services, "exporter", "keygen", "service_completed_successfully")


def _least_privilege_problems(services, errors):
    """The owner migrates, the services run as their own users (DESIGN §7)."""
    errors.need(services["migrate"].get("command") == ["diagnosis-exporter", "migrate"],
                "migrate must run diagnosis-exporter migrate")
    errors.depends(services, "db-users", "migrate", "service_completed_successfully")
    errors.depends(services, "submit", "db-users", "service_completed_successfully")
    errors.depends(services, "exporter", "db-users", "service_completed_successfully")
    for name, user in (("submit", "submit_app"), ("exporter", "exporter_app")):
        errors.need(str(services[name]["environment"].get("DATABASE_URL", "")).startswith(f"postgres://{user}:"),
                    f"{name}: DATABASE_URL must name the login user {user}")


def _environment_problems(services, root, errors):
    submit = services["submit"]["environment"]
    exporter = services["exporter"]["environment"]
    need = errors.need
    need(submit.get("BIND_ADDR") == "0.0.0.0:8000", "submit: BIND_ADDR must be 0.0.0.0:8000")
    need(submit.get("METRIC_PROVIDER") == "prometheus", "submit: METRIC_PROVIDER must be prometheus")
    need("demo" in str(submit.get("KEY_CLAIM_TOKEN", "")).lower(),
         "submit: the default KEY_CLAIM_TOKEN must be marked as a demo value")
    need(exporter.get("BUCKET_URL") == "s3://exports/", "exporter: BUCKET_URL must be s3://exports/")
    need(exporter.get("AWS_ENDPOINT") == "http://minio:9000", "exporter: AWS_ENDPOINT must be http://minio:9000")
    need(str(exporter.get("AWS_ALLOW_HTTP")) == "true", "exporter: AWS_ALLOW_HTTP must be true")
    need(services["exporter"].get("command") == ["diagnosis-exporter"], "exporter must run in its scheduled mode")
    mounts = " ".join(services["exporter"].get("volumes", []))
    need("./exposure-configuration:" + str(exporter.get("EXPOSURE_CONFIG_DIR")) in mounts,
         "exporter: EXPOSURE_CONFIG_DIR must be infra/exposure-configuration, mounted")
    key_dir = str(pathlib.PurePosixPath(str(exporter.get("SIGNING_KEY_FILE"))).parent)
    need(any(m.split(":")[1] == key_dir for m in services["keygen"].get("volumes", []))
         and any(m.split(":")[1] == key_dir for m in services["exporter"].get("volumes", [])),
         "exporter: SIGNING_KEY_FILE must be in the volume keygen writes")
    need((root / "infra/exposure-configuration").is_dir(), "infra/exposure-configuration is missing")


def problems(compose, known, root):
    """What is wrong with the parsed compose file; `known` is every variable the binaries read."""
    services = compose.get("services", {})
    errors = _Findings()
    for name in SERVICES:
        errors.need(name in services, f"service {name} is missing")
    if errors:
        return list(errors)
    _service_problems(services, root, errors)
    for name in ("migrate", "db-users"):
        errors.need(name in services, f"service {name} is missing")
    if errors:
        return list(errors)
    _least_privilege_problems(services, errors)
    _environment_problems(services, root, errors)
    for name in ("submit", "exporter"):
        for var in services[name]["environment"]:
            if not var.startswith("AWS_") and var not in known:
                errors.append(f"{name}: {var} is not a variable the binaries read (a typo?)")
    return list(errors)


def load(root):
    return yaml.safe_load((root / COMPOSE).read_text())


def run(report, ctx):
    report.section(f"Compose ({COMPOSE})")
    report.command("compose.yaml against the Compose Specification schema",
                   [ctx.venv_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", COMPOSE],
                   cwd=ctx.root)
    report.check("compose.yaml: services, images, healthchecks, dependencies, variables",
                 lambda: Outcome.of(problems(load(ctx.root), ctx.known, ctx.root)))
