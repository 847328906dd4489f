"""What a reviewer of an internet-facing health service would flag in the shipped deployment
files (DESIGN §3.2, §6, §7): TLS to the database turned off or unverified, padding off, a
client identity that bans everyone behind a proxy, and settings outside their one place.

It reads compose, the Kubernetes manifests and the Terraform module; it changes none of them.
"""
import re

import yaml

from .report import Outcome

FILES = ["infra/compose.yaml", "infra/k8s/secrets.template.yaml", "infra/k8s/migrate-job.yaml"]
CONFIG_MAPS = ("diagnosis-submit-config", "diagnosis-exporter-config")


def texts(root):
    """{file: text} of every file that can hold a database URL."""
    terraform = sorted(str(p.relative_to(root)) for p in (root / "infra/terraform").rglob("*.tf"))
    return {f: (root / f).read_text() for f in FILES + terraform}


def tls_problems(files):
    errors = []
    for f, text in files.items():
        for url in re.findall(r"postgres(?:ql)?://[^\s'\"`>]+", text):
            if "sslmode=verify-full" not in url:
                errors.append(f"{f}: a DATABASE_URL without sslmode=verify-full: {re.sub(r':[^:@/]*@', ':***@', url)}")
        if re.search(r'rds\.force_ssl"?\s*\n?\s*value\s*=\s*"0"', text):
            errors.append(f"{f}: turns rds.force_ssl off")
        if re.search(r"sslmode=(disable|allow|prefer|require)\b", text) and f.endswith((".yaml", ".tf")):
            errors.append(f"{f}: an sslmode weaker than verify-full")
    return errors


def configs(root, compose_text, rendered):
    """{(where, which): environment} of both services, from compose and the Kubernetes ConfigMaps."""
    services = yaml.safe_load(compose_text)["services"]
    found = {("compose", "submit"): services["submit"].get("environment", {}),
             ("compose", "exporter"): services["exporter"].get("environment", {})}
    for f in rendered:
        for d in yaml.safe_load_all((root / f).read_text()):
            if d and d.get("kind") == "ConfigMap" and d["metadata"]["name"] in CONFIG_MAPS:
                found[(f, d["metadata"]["name"])] = d.get("data", {})
    return found


def exporter_problems(name, env):
    errors = []
    if int(str(env.get("PAD_MIN_KEYS", "0")) or 0) <= 0:
        errors.append(f"{name}: padding is off (PAD_MIN_KEYS)")
    # DESIGN §6: a pass holds three pooled connections at once, and the submit service's
    # limits are read from the database, never from the exporter's configuration.
    if int(str(env.get("DATABASE_POOL_SIZE", "16")) or 16) < 3:
        errors.append(f"{name}: DATABASE_POOL_SIZE below 3, what an exporter pass holds at once")
    for ignored in ("ONE_TIME_CODE_EXPIRY_MINUTES", "ENCRYPTION_KEY_VALIDITY_DAYS", "CLAIM_KEY_BAN_DURATION_MINUTES"):
        if ignored in env:
            errors.append(f"{name}: {ignored} is the submit service's setting; the exporter ignores it")
    return errors


def submit_problems(name, env):
    errors = []
    if int(str(env.get("ENCRYPTION_KEY_VALIDITY_DAYS", "15")) or 15) > 20:
        errors.append(f"{name}: ENCRYPTION_KEY_VALIDITY_DAYS above 20 keeps personal data past 21 days")
    if "TRUSTED_PROXIES" not in env:
        errors.append(f"{name}: TRUSTED_PROXIES is not set deliberately")
    if str(env.get("TRUST_X_FORWARDED_FOR", "false")).lower() == "true":
        errors.append(f"{name}: TRUST_X_FORWARDED_FOR=true trusts any peer; list the proxies in TRUSTED_PROXIES")
    return errors


def problems(root, rendered):
    files = texts(root)
    errors = tls_problems(files)
    for (where, what), env in configs(root, files["infra/compose.yaml"], rendered).items():
        name = f"{where}: {what}"
        errors += exporter_problems(name, env) if "exporter" in what else submit_problems(name, env)
    return errors


def run(report, ctx):
    report.section("Security settings (DESIGN §3.2, §6, §7)")
    report.check("deployment files: database TLS verified, padding on, client identity set, "
                 "settings in their one place",
                 lambda: Outcome.of(problems(ctx.root, ctx.rendered)))
