import copy
import unittest

from checkinfra import compose
from checkinfra.context import known_variables
from checkinfra.tests.support import REPO

SHIPPED = compose.load(REPO)
KNOWN = known_variables(REPO)


def problems(change):
    """The problems of the shipped compose file after `change(services)`."""
    doc = copy.deepcopy(SHIPPED)
    change(doc["services"])
    return compose.problems(doc, KNOWN, REPO)


class ComposeTest(unittest.TestCase):
    def test_the_shipped_file_passes(self):
        self.assertEqual(compose.problems(SHIPPED, KNOWN, REPO), [])

    def test_a_missing_service_stops_the_check_there(self):
        self.assertEqual(problems(lambda s: s.pop("minio")), ["service minio is missing"])
        self.assertEqual(problems(lambda s: s.pop("db-users")), ["service db-users is missing"])

    def test_healthchecks_read_only_roots_and_dependencies_are_required(self):
        def change(services):
            del services["submit"]["healthcheck"]
            services["exporter"]["read_only"] = False
            services["exporter"]["depends_on"]["keygen"]["condition"] = "service_started"

        self.assertEqual(problems(change), [
            "service submit has no healthcheck",
            "service exporter must have a read-only root filesystem",
            "exporter must depend on keygen with condition service_completed_successfully"])

    def test_each_service_logs_in_as_its_own_user(self):
        def change(services):
            services["submit"]["environment"]["DATABASE_URL"] = "postgres://diagnosis:x@postgres/diagnosis"

        self.assertEqual(problems(change), ["submit: DATABASE_URL must name the login user submit_app"])

    def test_a_variable_the_binaries_do_not_read_is_named(self):
        def change(services):
            services["submit"]["environment"]["DATABSE_URL"] = "x"
            services["exporter"]["environment"]["AWS_ANYTHING"] = "x"

        self.assertEqual(problems(change), ["submit: DATABSE_URL is not a variable the binaries read (a typo?)"])

    def test_the_signing_key_must_be_in_the_volume_keygen_writes(self):
        def change(services):
            services["exporter"]["environment"]["SIGNING_KEY_FILE"] = "/elsewhere/key.pem"

        self.assertEqual(problems(change), ["exporter: SIGNING_KEY_FILE must be in the volume keygen writes"])


if __name__ == "__main__":
    unittest.main()
