"""infra/docker/Dockerfile: hadolint, and the project's own rules for its stages, base images,
user, ports, build command, copied paths and .dockerignore.

It reads the Dockerfile; it never builds an image.
"""
import os
import re

from dockerfile_parse import DockerfileParser

from .report import Outcome

DOCKERFILE = "infra/docker/Dockerfile"
STAGES = [["builder", "rust:1.95-bookworm"], ["runtime", "debian:bookworm-slim"]]


def stages(instructions):
    """[name, base image, [instructions]] of each stage, the global ARG defaults substituted."""
    args, found = {}, []
    for ins in instructions:
        if ins["instruction"] == "ARG" and not found:
            name, _, default = ins["value"].partition("=")
            args[name.strip()] = default.strip()
        elif ins["instruction"] == "FROM":
            parts = ins["value"].split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            found.append([name, base, []])
        elif found:
            found[-1][2].append(ins)
    return found


def _values(stage, instruction):
    return [i["value"] for i in stage if i["instruction"] == instruction]


def builder_problems(builder):
    errors = []
    if not re.search(r"cargo build --release --locked -p diagnosis-submit -p diagnosis-exporter",
                     " ".join(_values(builder, "RUN"))):
        errors.append("the builder must run cargo build --release --locked -p diagnosis-submit -p diagnosis-exporter")
    for var in ("DIAGNOSIS_BUILD_BRANCH", "DIAGNOSIS_BUILD_REVISION"):
        if not any(v.startswith(var) for v in _values(builder, "ARG")):
            errors.append(f"the builder must take the build argument {var}")
        if not any(var in v for v in _values(builder, "ENV")):
            errors.append(f"the builder must pass {var} to the build as an environment variable")
    return errors


def runtime_problems(runtime):
    errors = []
    users = _values(runtime, "USER")
    if not users or users[-1].split(":")[0] in ("root", "0"):
        errors.append("the runtime stage must switch to a non-root user")
    elif not users[-1].split(":")[0].isdigit():
        errors.append("the runtime user must be numeric, so that Kubernetes' runAsNonRoot can verify it")
    exposed = set(" ".join(_values(runtime, "EXPOSE")).split())
    if not {"8000", "2222"} <= exposed:
        errors.append(f"the runtime stage must EXPOSE 8000 and 2222, found {sorted(exposed)}")
    cmds = _values(runtime, "CMD")
    if cmds != ['["diagnosis-submit"]']:
        errors.append(f'the default command must be CMD ["diagnosis-submit"], found {cmds}')
    if not re.search(r"ca-certificates", " ".join(_values(runtime, "RUN"))):
        errors.append("the runtime stage must install ca-certificates")
    copied = " ".join(_values(runtime, "COPY"))
    for binary in ("diagnosis-submit", "diagnosis-exporter"):
        if binary not in copied:
            errors.append(f"the runtime stage does not copy {binary}")
    return errors


def stage_problems(found):
    if [s[:2] for s in found] != STAGES:
        return [f"stages must be builder (rust:1.95-bookworm) then runtime (debian:bookworm-slim), "
                f"found {[s[:2] for s in found]}"]
    return builder_problems(found[0][2]) + runtime_problems(found[1][2])


def context_problems(root, instructions):
    """.dockerignore keeps build output, state and history out; every COPY source is in the context."""
    errors = []
    ignore = [line.strip() for line in (root / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    for required in ("target", ".dev", ".git"):
        if required not in ignore and f"{required}/" not in ignore:
            errors.append(f".dockerignore must exclude {required}")
    ignored_tops = {p.rstrip("/") for p in ignore if "*" not in p and "/" not in p.rstrip("/")}
    for ins in instructions:
        if ins["instruction"] != "COPY" or "--from=" in ins["value"]:
            continue
        sources = [w for w in ins["value"].split() if not w.startswith("--")][:-1]
        for source in sources:
            if not (root / source).exists():
                errors.append(f"COPY {source}: no such path in the repository")
            elif source.split("/")[0] in ignored_tops:
                errors.append(f"COPY {source}: excluded by .dockerignore")
    return errors


def member_problems(root, instructions):
    """Every workspace member is in the build context copied into the builder."""
    members = re.search(r"members\s*=\s*\[([^\]]*)\]", (root / "Cargo.toml").read_text())
    copied_dirs = {w for ins in instructions if ins["instruction"] == "COPY" for w in ins["value"].split()}
    errors = []
    for member in re.findall(r'"([^"]+)"', members.group(1) if members else ""):
        # A nested member (exporter/format) comes with the directory that holds it.
        if not any(member == d or member.startswith(d.rstrip("/") + "/") for d in copied_dirs):
            errors.append(f"workspace member {member} is not copied into the builder")
    return errors


def problems(root):
    instructions = DockerfileParser(path=os.fspath(root / DOCKERFILE)).structure
    return (stage_problems(stages(instructions)) + context_problems(root, instructions)
            + member_problems(root, instructions))


def run(report, ctx):
    report.section(f"Container image ({DOCKERFILE})")
    report.command(f"hadolint {DOCKERFILE}",
                   [ctx.venv_tool("hadolint"), "--no-color", "--failure-threshold", "warning", DOCKERFILE],
                   cwd=ctx.root)
    report.check("Dockerfile: stages, base images, user, ports, build, copied paths, .dockerignore",
                 lambda: Outcome.of(problems(ctx.root)))
