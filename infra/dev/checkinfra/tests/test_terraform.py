import unittest

from checkinfra import terraform
from checkinfra.tests.support import TreeCase

MODULE = "infra/terraform/aws"


class TerraformTest(TreeCase):
    """A small module in the shape of infra/terraform/aws, broken one way at a time."""

    def setUp(self):
        super().setUp()
        self.write(f"{MODULE}/versions.tf", """\
            terraform {
              required_providers {
                aws = { source = "hashicorp/aws", version = "~> 5.0" }
              }
            }
            """)
        self.write(f"{MODULE}/variables.tf", """\
            variable "region" {
              description = "AWS region"
            }
            variable "db_password" {
              description = "database password"
              sensitive   = true
            }
            variable "size" {
              description = "instance size"
              default     = "small"
            }
            """)
        self.write(f"{MODULE}/main.tf", """\
            locals {
              name = "diagnosis-${var.region}"
            }
            data "aws_caller_identity" "current" {}
            resource "aws_s3_bucket" "exports" {
              bucket = "${local.name}-${data.aws_caller_identity.current.account_id}-${var.size}"
            }
            resource "aws_db_instance" "db" {
              password = var.db_password
              tags     = { bucket = aws_s3_bucket.exports.id }
            }
            resource "aws_cloudfront_function" "retrieve" {
              code = replace(file("${path.module}/../../cdn/retrieve.js"), "__HMAC_KEY_HEX__", "00")
            }
            """)
        self.write(f"{MODULE}/example.tfvars", 'region = "eu-west-1"\n')
        self.write("infra/cdn/retrieve.js", 'const KEY = "__HMAC_KEY_HEX__";\nconst REGION = "__REGION_PATH__";\n')

    def problems(self):
        return terraform.problems(self.root)

    def test_a_consistent_module_passes(self):
        self.assertEqual(self.problems(), [])

    def test_every_reference_must_be_declared(self):
        self.edit(f"{MODULE}/main.tf", "password = var.db_password",
                  "password = var.db_pasword\n  kms = local.key\n  az = data.aws_zones.all.names\n"
                  "  subnet = aws_subnet.private.id")
        self.assertEqual(self.problems(), [
            f"{MODULE}/main.tf: var.db_pasword is not declared",
            f"{MODULE}/main.tf: local.key is not declared",
            f"{MODULE}/main.tf: data.aws_zones.all is not declared",
            f"{MODULE}/main.tf: aws_subnet.private is not declared",
            "variable db_password is declared but never used"])

    def test_a_variable_needs_a_description_and_a_required_one_an_example(self):
        self.edit(f"{MODULE}/variables.tf", 'description = "AWS region"', "")
        self.write(f"{MODULE}/example.tfvars", 'regoin = "eu-west-1"\n')
        self.assertEqual(self.problems(), [
            f"{MODULE}/variables.tf: variable region has no description",
            f"{MODULE}/example.tfvars: regoin is not a variable",
            f"{MODULE}/example.tfvars: the required variable region has no example"])

    def test_a_file_that_does_not_parse_is_named(self):
        self.write(f"{MODULE}/broken.tf", 'resource "aws_s3_bucket" {\n')
        found = self.problems()
        self.assertEqual(len(found), 1, found)
        self.assertTrue(found[0].startswith(f"{MODULE}/broken.tf: "), found[0])

    def test_a_file_read_by_file_must_exist(self):
        self.edit(f"{MODULE}/main.tf", "cdn/retrieve.js", "cdn/retrieval.js")
        self.assertEqual(self.problems(), [f"{MODULE}/main.tf: file {MODULE}/../../cdn/retrieval.js does not exist"])

    def test_each_placeholder_of_the_edge_function_occurs_once(self):
        self.write("infra/cdn/retrieve.js", 'const KEY = "__HMAC_KEY_HEX__"; // __HMAC_KEY_HEX__\n')
        self.assertEqual(terraform.placeholder_problems(self.root), [
            "infra/cdn/retrieve.js: __HMAC_KEY_HEX__ occurs 2 times; Terraform's replace() expects exactly one",
            "infra/cdn/retrieve.js: __REGION_PATH__ occurs 0 times; Terraform's replace() expects exactly one"])
        (self.root / "infra/cdn/retrieve.js").unlink()
        self.assertEqual(terraform.placeholder_problems(self.root), [
            "infra/cdn/retrieve.js is missing; cloudfront.tf builds the retrieval function from it"])

    def test_the_provider_must_be_pinned(self):
        self.edit(f"{MODULE}/versions.tf", "hashicorp/aws", "someone/aws")
        self.assertEqual(self.problems(), ["versions.tf must pin the hashicorp/aws provider"])


if __name__ == "__main__":
    unittest.main()
