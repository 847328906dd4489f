"""Every YAML file under infra/ parses and holds a document.

It only parses: what the files say is checked by the module of their area.
"""
import yaml

from .report import Outcome


def files(root):
    """The YAML files under infra/, relative to root, hidden directories and node_modules left out."""
    found = (p.relative_to(root) for p in (root / "infra").rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
    return sorted(p for p in found if not any(part.startswith(".") or part == "node_modules" for part in p.parts))


def problems(root):
    """The files that do not parse or hold no document, and how many files were read."""
    found = []
    paths = files(root)
    for path in paths:
        try:
            docs = [d for d in yaml.safe_load_all((root / path).read_text()) if d is not None]
            if not docs:
                raise ValueError("no document")
        except Exception as e:  # any parse failure is the finding
            found.append(f"{path}: {e}")
    return found, len(paths)


def check(root):
    found, count = problems(root)
    return Outcome.of(found, after=[f"{count} files"])


def run(report, ctx):
    report.section("YAML")
    outcome = report.check("every YAML file under infra/ parses", lambda: check(ctx.root))
    report.note(f"({outcome.last_line()})")
