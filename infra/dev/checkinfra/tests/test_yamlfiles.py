import unittest

from checkinfra import yamlfiles
from checkinfra.tests.support import TreeCase


class YamlFilesTest(TreeCase):
    def test_every_file_that_does_not_parse_or_is_empty_is_named_and_all_are_counted(self):
        self.write("infra/good.yaml", "a: 1\n")
        self.write("infra/k8s/two.yml", "---\na: 1\n---\nb: 2\n")
        self.write("infra/bad.yaml", "a: [1\n")
        self.write("infra/empty.yml", "# only a comment\n")
        found, count = yamlfiles.problems(self.root)
        self.assertEqual(count, 4)
        self.assertEqual(len(found), 2)
        self.assertTrue(found[0].startswith("infra/bad.yaml: while parsing a flow sequence"), found[0])
        self.assertEqual(found[1], "infra/empty.yml: no document")

    def test_hidden_directories_and_node_modules_are_left_out(self):
        self.write("infra/.terraform/x.yaml", "a: [\n")
        self.write("infra/cdn/node_modules/x.yaml", "a: [\n")
        self.write("infra/x.txt", "a: [\n")
        self.assertEqual(yamlfiles.problems(self.root), ([], 0))

    def test_the_outcome_ends_with_the_count(self):
        self.write("infra/bad.yaml", "")
        outcome = yamlfiles.check(self.root)
        self.assertFalse(outcome.ok)
        self.assertEqual(outcome.output, ["infra/bad.yaml: no document", "1 files"])


if __name__ == "__main__":
    unittest.main()
