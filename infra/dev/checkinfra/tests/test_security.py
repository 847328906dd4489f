import unittest

from checkinfra import security
from checkinfra.tests.support import TreeCase

URL = "postgres://submit_app:pw@db:5432/d?sslmode=verify-full&sslrootcert=/ca.pem"
COMPOSE = f"""\
services:
  submit:
    environment: {{DATABASE_URL: "{URL}", TRUSTED_PROXIES: ""}}
  exporter:
    environment: {{PAD_MIN_KEYS: "1000"}}
"""


def write_deployment(tree):
    """Deployment files that keep every rule: compose, the Kubernetes files, a Terraform file."""
    tree.write("infra/compose.yaml", COMPOSE)
    tree.write("infra/k8s/secrets.template.yaml", "stringData: {DATABASE_URL: <REPLACE>}\n")
    tree.write("infra/k8s/migrate-job.yaml", "kind: Job\n")
    tree.write("infra/terraform/aws/rds.tf", 'locals {\n  url = "' + URL + '"\n}\n')
    tree.write("rendered.yaml", """\
        kind: ConfigMap
        metadata: {name: diagnosis-submit-config}
        data: {TRUSTED_PROXIES: "10.0.0.0/8"}
        ---
        kind: ConfigMap
        metadata: {name: diagnosis-exporter-config}
        data: {PAD_MIN_KEYS: "1000", DATABASE_POOL_SIZE: "4"}
        """)


class SecurityTest(TreeCase):
    def test_deployment_files_that_keep_every_rule_pass(self):
        write_deployment(self)
        self.assertEqual(security.problems(self.root, ["rendered.yaml"]), [])

    def test_every_file_and_every_configuration_is_read(self):
        write_deployment(self)
        self.edit("infra/terraform/aws/rds.tf", "sslmode=verify-full", "sslmode=disable")
        self.edit("rendered.yaml", 'DATABASE_POOL_SIZE: "4"', 'DATABASE_POOL_SIZE: "2"')
        self.assertEqual(security.problems(self.root, ["rendered.yaml"]), [
            "infra/terraform/aws/rds.tf: a DATABASE_URL without sslmode=verify-full: "
            "postgres://submit_app:***@db:5432/d?sslmode=disable&sslrootcert=/ca.pem",
            "infra/terraform/aws/rds.tf: an sslmode weaker than verify-full",
            "rendered.yaml: diagnosis-exporter-config: DATABASE_POOL_SIZE below 3, "
            "what an exporter pass holds at once"])

    def test_a_database_url_must_verify_the_server_and_its_password_is_not_shown(self):
        found = security.tls_problems({
            "infra/k8s/secrets.template.yaml": "DATABASE_URL: postgres://submit_app:s3cret@db:5432/d?sslmode=require\n",
            "infra/terraform/aws/rds.tf": 'parameter {\n  name = "rds.force_ssl"\n  value = "0"\n}\n',
            "infra/compose.yaml": "DATABASE_URL: postgres://u:p@db/d?sslmode=verify-full&sslrootcert=/ca.pem\n",
        })
        self.assertEqual(found, [
            "infra/k8s/secrets.template.yaml: a DATABASE_URL without sslmode=verify-full: "
            "postgres://submit_app:***@db:5432/d?sslmode=require",
            "infra/k8s/secrets.template.yaml: an sslmode weaker than verify-full",
            "infra/terraform/aws/rds.tf: turns rds.force_ssl off"])

    def test_the_exporter_pads_holds_enough_connections_and_carries_no_submit_settings(self):
        self.assertEqual(security.exporter_problems("compose: exporter", {"PAD_MIN_KEYS": "1000"}), [])
        self.assertEqual(security.exporter_problems("compose: exporter", {
            "PAD_MIN_KEYS": "0", "DATABASE_POOL_SIZE": "2", "CLAIM_KEY_BAN_DURATION_MINUTES": "30"}), [
            "compose: exporter: padding is off (PAD_MIN_KEYS)",
            "compose: exporter: DATABASE_POOL_SIZE below 3, what an exporter pass holds at once",
            "compose: exporter: CLAIM_KEY_BAN_DURATION_MINUTES is the submit service's setting; "
            "the exporter ignores it"])

    def test_the_submit_service_names_its_proxies_and_keeps_keypairs_at_most_twenty_days(self):
        self.assertEqual(security.submit_problems("compose: submit", {"TRUSTED_PROXIES": ""}), [])
        self.assertEqual(security.submit_problems("compose: submit", {
            "ENCRYPTION_KEY_VALIDITY_DAYS": "21", "TRUST_X_FORWARDED_FOR": "True"}), [
            "compose: submit: ENCRYPTION_KEY_VALIDITY_DAYS above 20 keeps personal data past 21 days",
            "compose: submit: TRUSTED_PROXIES is not set deliberately",
            "compose: submit: TRUST_X_FORWARDED_FOR=true trusts any peer; list the proxies in TRUSTED_PROXIES"])


class ConfigMapsTest(TreeCase):
    def test_the_config_maps_of_the_manifests_are_read_beside_compose(self):
        self.write("rendered.yaml", """\
            kind: ConfigMap
            metadata: {name: diagnosis-exporter-config}
            data: {PAD_MIN_KEYS: "0"}
            ---
            kind: ConfigMap
            metadata: {name: other}
            data: {PAD_MIN_KEYS: "0"}
            """)
        found = security.configs(self.root, COMPOSE, ["rendered.yaml"])
        self.assertEqual(found, {("compose", "submit"): {"DATABASE_URL": URL, "TRUSTED_PROXIES": ""},
                                 ("compose", "exporter"): {"PAD_MIN_KEYS": "1000"},
                                 ("rendered.yaml", "diagnosis-exporter-config"): {"PAD_MIN_KEYS": "0"}})


if __name__ == "__main__":
    unittest.main()
