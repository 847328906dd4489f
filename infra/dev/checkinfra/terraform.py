"""infra/terraform/aws: terraform fmt, the HCL parses, every var., local., data. and resource
reference is declared, file() paths exist, the example sets every required variable, and the
edge function's placeholders occur once.

It reads the module; it never runs terraform init, validate or plan (no provider, no account).
"""
import pathlib
import re
from dataclasses import dataclass, field

import hcl2

from .report import Outcome

MODULE = "infra/terraform/aws"
RETRIEVE = "infra/cdn/retrieve.js"


@dataclass
class Declarations:
    variables: set = field(default_factory=set)
    locals_: set = field(default_factory=set)
    resources: set = field(default_factory=set)
    datas: set = field(default_factory=set)
    sensitive: set = field(default_factory=set)
    required: set = field(default_factory=set)


def _named(blocks):
    """"type.name" of every resource or data block."""
    return {f"{kind.strip(chr(34))}.{n.strip(chr(34))}"
            for block in blocks for kind, named in block.items() for n in named if not n.startswith("__")}


def declare(doc, path, decl, errors):
    """Adds what one parsed file declares to `decl`."""
    for block in doc.get("variable", []):
        for name, body in block.items():
            name = name.strip('"')
            decl.variables.add(name)
            if body.get("sensitive") in (True, "true", "${true}"):
                decl.sensitive.add(name)
            if "default" not in body:
                decl.required.add(name)
            if not body.get("description"):
                errors.append(f"{path}: variable {name} has no description")
    for block in doc.get("locals", []):
        decl.locals_.update(k for k in block if not k.startswith("__"))
    decl.resources.update(_named(doc.get("resource", [])))
    decl.datas.update(_named(doc.get("data", [])))


def reference_problems(root, path, text, decl, used_vars):
    errors = []
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for name in re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_]*)", code):
        used_vars.add(name)
        if name not in decl.variables:
            errors.append(f"{path}: var.{name} is not declared")
    for name in re.findall(r"\blocal\.([A-Za-z_][A-Za-z0-9_]*)", code):
        if name not in decl.locals_:
            errors.append(f"{path}: local.{name} is not declared")
    for ref in re.findall(r"\bdata\.([a-z0-9_]+\.[A-Za-z0-9_]+)", code):
        if ref not in decl.datas:
            errors.append(f"{path}: data.{ref} is not declared")
    for ref in re.findall(r"(?<![.\w\"])(aws_[a-z0-9_]+\.[A-Za-z_][A-Za-z0-9_]*)", code):
        if ref not in decl.resources:
            errors.append(f"{path}: {ref} is not declared")
    for rel in re.findall(r'file\("\$\{path\.module\}/([^"]+)"\)', code):
        if not (root / MODULE / rel).is_file():
            errors.append(f"{path}: file {pathlib.PurePosixPath(MODULE) / rel} does not exist")
    return errors


def placeholder_problems(root):
    """The edge function's code is infra/cdn/retrieve.js with its placeholders replaced: each must
    occur exactly once, as the constant, or replace() would change more (or nothing)."""
    retrieve = root / RETRIEVE
    if not retrieve.is_file():
        return [f"{RETRIEVE} is missing; cloudfront.tf builds the retrieval function from it"]
    source = retrieve.read_text()
    return [f"{RETRIEVE}: {p} occurs {source.count(p)} times; Terraform's replace() expects exactly one"
            for p in ("__HMAC_KEY_HEX__", "__REGION_PATH__") if source.count(p) != 1]


def example_problems(root, decl):
    example = f"{MODULE}/example.tfvars"
    errors = []
    try:
        values = {k: v for k, v in hcl2.loads((root / example).read_text()).items() if not k.startswith("__")}
        for name in values:
            if name not in decl.variables:
                errors.append(f"{example}: {name} is not a variable")
        for name in sorted(decl.required - decl.sensitive - set(values)):
            errors.append(f"{example}: the required variable {name} has no example")
    except Exception as e:  # a file that does not parse is the finding
        errors.append(f"{example}: {e}")
    return errors


def problems(root):
    errors, decl, texts = [], Declarations(), {}
    for path in sorted(p.relative_to(root) for p in (root / MODULE).glob("*.tf")):
        text = (root / path).read_text()
        texts[path] = text
        try:
            doc = hcl2.loads(text)
        except Exception as e:  # a file that does not parse is the finding
            errors.append(f"{path}: {e}")
            continue
        declare(doc, path, decl, errors)
        if path.name == "versions.tf" and "hashicorp/aws" not in text:
            errors.append("versions.tf must pin the hashicorp/aws provider")
    used_vars = set()
    for path, text in texts.items():
        errors += reference_problems(root, path, text, decl, used_vars)
    errors += [f"variable {name} is declared but never used" for name in sorted(decl.variables - used_vars)]
    return errors + placeholder_problems(root) + example_problems(root, decl)


def run(report, ctx):
    report.section(f"Terraform ({MODULE})")
    if ctx.terraform:
        report.command("terraform fmt -check -recursive infra/terraform",
                       [ctx.terraform, "fmt", "-check", "-diff", "-recursive", "infra/terraform"], cwd=ctx.root)
    else:
        report.skip("terraform fmt -check (no terraform here)")
    report.skip("terraform validate / plan (they need the AWS provider, which comes from a registry this machine "
                "cannot reach, and an AWS account)")
    report.check("HCL parses; every var., local., data. and resource reference is declared; file() paths exist; "
                 "placeholders", lambda: Outcome.of(problems(ctx.root)))
