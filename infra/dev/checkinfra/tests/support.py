"""What the tests share: the repository, and throw-away repository trees made of a few files."""
import pathlib
import shutil
import tempfile
import textwrap
import unittest

REPO = pathlib.Path(__file__).resolve().parents[4]


class TreeCase(unittest.TestCase):
    """A test with a throw-away repository root, removed when the test ends."""

    def setUp(self):
        self._dir = tempfile.TemporaryDirectory(prefix="checkinfra-test.")
        self.root = pathlib.Path(self._dir.name)
        self.addCleanup(self._dir.cleanup)

    def write(self, path, text):
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))
        return target

    def copy(self, path):
        """Copies a file of the repository into the tree, at the same place."""
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, target)
        return target

    def edit(self, path, old, new):
        """Replaces `old` (which must be there) with `new` in a file of the tree."""
        target = self.root / path
        text = target.read_text()
        self.assertIn(old, text, f"the fixture {path} changed: update the test")
        target.write_text(text.replace(old, new))
