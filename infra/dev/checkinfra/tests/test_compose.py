import copy
import unittest

import yaml

from checkinfra import compose
from checkinfra.tests.support import TreeCase

# The smallest compose file the rules accept.
COMPOSE = """\
x-image: &image
  build: {context: .., dockerfile: infra/docker/Dockerfile}
  read_only: true
services:
  postgres:
    image: postgres:15
    healthcheck: {test: ["CMD", "pg_isready"]}
  minio:
    image: minio/minio
    healthcheck: {test: ["CMD", "mc", "ready", "local"]}
  minio-init:
    image: minio/mc
    command: ["mc mb local/exports"]
  keygen:
    <<: *image
    command: ["diagnosis-exporter keygen --out /keys/signing-key.pem"]
    volumes: ["signing-key:/keys"]
  migrate:
    <<: *image
    command: ["diagnosis-exporter", "migrate"]
  db-users:
    image: postgres:15
    depends_on: {migrate: {condition: service_completed_successfully}}
  submit:
    <<: *image
    healthcheck: {test: ["CMD", "true"]}
    depends_on:
      postgres: {condition: service_healthy}
      db-users: {condition: service_completed_successfully}
    environment:
      DATABASE_URL: postgres://submit_app:pw@postgres:5432/diagnosis
      BIND_ADDR: 0.0.0.0:8000
      METRIC_PROVIDER: prometheus
      KEY_CLAIM_TOKEN: a-demo-token
  exporter:
    <<: *image
    command: ["diagnosis-exporter"]
    healthcheck: {test: ["CMD", "true"]}
    depends_on:
      postgres: {condition: service_healthy}
      minio-init: {condition: service_completed_successfully}
      keygen: {condition: service_completed_successfully}
      db-users: {condition: service_completed_successfully}
    environment:
      DATABASE_URL: postgres://exporter_app:pw@postgres:5432/diagnosis
      BUCKET_URL: s3://exports/
      AWS_ENDPOINT: http://minio:9000
      AWS_ALLOW_HTTP: "true"
      EXPOSURE_CONFIG_DIR: /config
      SIGNING_KEY_FILE: /keys/signing-key.pem
    volumes: ["./exposure-configuration:/config:ro", "signing-key:/keys:ro"]
"""
KNOWN = {"DATABASE_URL", "BIND_ADDR", "METRIC_PROVIDER", "KEY_CLAIM_TOKEN", "BUCKET_URL", "EXPOSURE_CONFIG_DIR",
         "SIGNING_KEY_FILE"}


class ComposeTest(TreeCase):
    def setUp(self):
        super().setUp()
        (self.root / "infra/exposure-configuration").mkdir(parents=True)
        self.compose = yaml.safe_load(COMPOSE)

    def problems(self, change=lambda services: None):
        """The problems of the fixture after `change(services)`."""
        doc = copy.deepcopy(self.compose)
        change(doc["services"])
        return compose.problems(doc, KNOWN, self.root)

    def test_a_file_that_keeps_every_rule_passes(self):
        self.assertEqual(self.problems(), [])

    def test_a_missing_service_stops_the_check_there(self):
        self.assertEqual(self.problems(lambda s: s.pop("minio")), ["service minio is missing"])
        self.assertEqual(self.problems(lambda s: s.pop("db-users")), ["service db-users is missing"])

    def test_healthchecks_read_only_roots_and_dependencies_are_required(self):
        def change(services):
            del services["submit"]["healthcheck"]
            services["exporter"]["read_only"] = False
            services["exporter"]["depends_on"]["keygen"]["condition"] = "service_started"

        self.assertEqual(self.problems(change), [
            "service submit has no healthcheck",
            "service exporter must have a read-only root filesystem",
            "exporter must depend on keygen with condition service_completed_successfully"])

    def test_the_images_are_built_from_the_repository_root(self):
        def change(services):
            services["keygen"]["build"] = {"context": ".", "dockerfile": "docker/Dockerfile"}

        self.assertEqual(self.problems(change), ["service keygen must build infra/docker/Dockerfile",
                                                 "service keygen must build from the repository root"])

    def test_each_service_logs_in_as_its_own_user(self):
        def change(services):
            services["submit"]["environment"]["DATABASE_URL"] = "postgres://diagnosis:x@postgres/diagnosis"

        self.assertEqual(self.problems(change), ["submit: DATABASE_URL must name the login user submit_app"])

    def test_a_variable_the_binaries_do_not_read_is_named(self):
        def change(services):
            services["submit"]["environment"]["DATABSE_URL"] = "x"
            services["exporter"]["environment"]["AWS_ANYTHING"] = "x"

        self.assertEqual(self.problems(change), ["submit: DATABSE_URL is not a variable the binaries read (a typo?)"])

    def test_the_signing_key_and_the_exposure_configuration_are_mounted(self):
        def change(services):
            services["exporter"]["environment"]["SIGNING_KEY_FILE"] = "/elsewhere/key.pem"
            services["exporter"]["volumes"] = ["signing-key:/keys:ro"]

        (self.root / "infra/exposure-configuration").rmdir()
        self.assertEqual(self.problems(change), [
            "exporter: EXPOSURE_CONFIG_DIR must be infra/exposure-configuration, mounted",
            "exporter: SIGNING_KEY_FILE must be in the volume keygen writes",
            "infra/exposure-configuration is missing"])


if __name__ == "__main__":
    unittest.main()
