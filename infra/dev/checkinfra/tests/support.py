"""What the tests share: throw-away repository trees made of a few fixture files.

The tests never read the shipped deployment files: a broken one fails its check, not the tests.
"""
import pathlib
import tempfile
import textwrap
import unittest


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

    def edit(self, path, old, new):
        """Replaces `old` (which must be there) with `new` in a file of the tree."""
        target = self.root / path
        text = target.read_text()
        self.assertIn(old, text, f"the fixture {path} changed: update the test")
        target.write_text(text.replace(old, new))
