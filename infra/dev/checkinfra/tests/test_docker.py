import unittest

from checkinfra import docker
from checkinfra.tests.support import TreeCase

DOCKERFILE = "infra/docker/Dockerfile"


# The smallest Dockerfile, .dockerignore and workspace the rules accept.
FIXTURE = {
    DOCKERFILE: """\
        ARG RUST_IMAGE=rust:1.95-bookworm
        FROM ${RUST_IMAGE} AS builder
        ARG DIAGNOSIS_BUILD_BRANCH=unknown
        ARG DIAGNOSIS_BUILD_REVISION=unknown
        ENV DIAGNOSIS_BUILD_BRANCH=${DIAGNOSIS_BUILD_BRANCH} \\
            DIAGNOSIS_BUILD_REVISION=${DIAGNOSIS_BUILD_REVISION}
        WORKDIR /src
        COPY Cargo.toml Cargo.lock ./
        COPY core core
        COPY exporter exporter
        COPY sql sql
        RUN cargo build --release --locked -p diagnosis-submit -p diagnosis-exporter \\
            && install -D target/release/diagnosis-submit target/release/diagnosis-exporter /out/

        FROM debian:bookworm-slim AS runtime
        # hadolint ignore=DL3008
        RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \\
            && rm -rf /var/lib/apt/lists/*
        COPY --from=builder /out/diagnosis-submit /out/diagnosis-exporter /usr/local/bin/
        USER 10001:10001
        EXPOSE 8000 2222
        CMD ["diagnosis-submit"]
        """,
    ".dockerignore": "# build context\n.git\ntarget\n.dev\n**/__pycache__\n",
    "Cargo.toml": '[workspace]\nmembers = ["core", "exporter", "exporter/format"]\n',
    "Cargo.lock": "",
}


class DockerfileTest(TreeCase):
    def setUp(self):
        super().setUp()
        for path, text in FIXTURE.items():
            self.write(path, text)
        for directory in ("core", "exporter/format", "sql"):
            (self.root / directory).mkdir(parents=True)

    def problems(self):
        return docker.problems(self.root)

    def test_a_dockerfile_that_keeps_every_rule_passes(self):
        self.assertEqual(self.problems(), [])

    def test_another_base_image_is_named(self):
        self.edit(DOCKERFILE, "FROM debian:bookworm-slim AS runtime", "FROM ubuntu:24.04 AS runtime")
        self.assertEqual(self.problems(), [
            "stages must be builder (rust:1.95-bookworm) then runtime (debian:bookworm-slim), "
            "found [['builder', 'rust:1.95-bookworm'], ['runtime', 'ubuntu:24.04']]"])

    def test_the_runtime_user_must_be_numeric_and_not_root(self):
        self.edit(DOCKERFILE, "USER 10001:10001", "USER diagnosis")
        self.assertEqual(self.problems(),
                         ["the runtime user must be numeric, so that Kubernetes' runAsNonRoot can verify it"])
        self.edit(DOCKERFILE, "USER diagnosis", "USER 0")
        self.assertEqual(self.problems(), ["the runtime stage must switch to a non-root user"])

    def test_ports_command_and_build_arguments_are_required(self):
        self.edit(DOCKERFILE, "EXPOSE 8000 2222", "EXPOSE 8000")
        self.edit(DOCKERFILE, 'CMD ["diagnosis-submit"]', 'CMD ["diagnosis-exporter"]')
        self.edit(DOCKERFILE, " \\\n    DIAGNOSIS_BUILD_REVISION=${DIAGNOSIS_BUILD_REVISION}", "")
        self.assertEqual(self.problems(), [
            "the builder must pass DIAGNOSIS_BUILD_REVISION to the build as an environment variable",
            "the runtime stage must EXPOSE 8000 and 2222, found ['8000']",
            "the default command must be CMD [\"diagnosis-submit\"], found ['[\"diagnosis-exporter\"]']"])

    def test_a_copied_path_must_exist_and_not_be_ignored(self):
        self.edit(DOCKERFILE, "COPY sql sql", "COPY sql sql\nCOPY docs docs\nCOPY target target")
        (self.root / "target").mkdir()
        self.assertEqual(self.problems(), ["COPY docs: no such path in the repository",
                                           "COPY target: excluded by .dockerignore"])

    def test_the_context_must_leave_out_local_state_and_every_member_must_be_copied(self):
        self.edit(".dockerignore", "\n.dev\n", "\n")
        self.edit(DOCKERFILE, "COPY core core\n", "")
        self.assertEqual(self.problems(), [".dockerignore must exclude .dev",
                                           "workspace member core is not copied into the builder"])


if __name__ == "__main__":
    unittest.main()
