"""What every area's checks share: the repository, a scratch directory, the external tools found
by the wrapper script, the manifests kustomize rendered, and what the binaries read and export.

It only reads the repository; the scratch directory is the one place anything is written.
"""
import functools
import os
import pathlib
import re
import sys
from dataclasses import dataclass, field

from . import promql

# The crates whose string literals name the variables the binaries read.
VARIABLE_ROOTS = ("core/src", "core/domain/src", "submit/src", "exporter/src", "exporter/format/src", "exporter/verify/src")


def known_variables(root):
    """Every upper-case string literal of the binaries' source: the variables they can read."""
    names = set()
    for crate in VARIABLE_ROOTS:
        for path in (root / crate).rglob("*.rs"):
            names.update(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', path.read_text()))
    return names


@dataclass
class Context:
    root: pathlib.Path
    work: pathlib.Path
    promtool: str = ""
    terraform: str = ""
    kubectl: str = ""
    shellcheck: str = ""
    # The Kubernetes manifests to check: kustomize's renderings, or the base's files one by one.
    rendered: list = field(default_factory=list)

    def venv_tool(self, name):
        """A command the wrapper installed beside this Python, in its virtualenv."""
        return os.path.join(os.path.dirname(sys.executable), name)

    @functools.cached_property
    def known(self):
        return known_variables(self.root)

    @functools.cached_property
    def series(self):
        return promql.exported(self.root)
