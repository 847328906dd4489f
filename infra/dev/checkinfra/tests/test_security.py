import unittest

from checkinfra import security
from checkinfra.tests.support import REPO, TreeCase

BASE = [str(p.relative_to(REPO)) for p in sorted((REPO / "infra/k8s/base").glob("*.yaml"))]


class SecurityTest(unittest.TestCase):
    def test_the_shipped_files_pass(self):
        self.assertEqual(security.problems(REPO, BASE), [])

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
        self.copy("infra/compose.yaml")
        self.write("rendered.yaml", """\
            kind: ConfigMap
            metadata: {name: diagnosis-exporter-config}
            data: {PAD_MIN_KEYS: "0"}
            ---
            kind: ConfigMap
            metadata: {name: other}
            data: {PAD_MIN_KEYS: "0"}
            """)
        compose_text = (self.root / "infra/compose.yaml").read_text()
        found = security.configs(self.root, compose_text, [str(self.root / "rendered.yaml")])
        self.assertEqual(set(found), {("compose", "exporter"), ("compose", "submit"),
                                      (str(self.root / "rendered.yaml"), "diagnosis-exporter-config")})
        self.assertEqual(security.exporter_problems("x", found[(str(self.root / "rendered.yaml"),
                                                                "diagnosis-exporter-config")]),
                         ["x: padding is off (PAD_MIN_KEYS)"])


if __name__ == "__main__":
    unittest.main()
