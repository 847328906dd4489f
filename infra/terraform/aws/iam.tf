# What the exporter may do with the bucket: publish, read back, list and delete (retention).
# Attach the policy to the role the exporter runs as (an EKS service-account role, an ECS task
# role, ...): set exporter_role_name, or attach output exporter_policy_arn yourself.
# The submit service needs no AWS permission at all.

data "aws_iam_policy_document" "exporter" {
  statement {
    sid       = "ListExports"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.exports.arn]
  }

  statement {
    sid = "PublishExports"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
    ]
    resources = ["${aws_s3_bucket.exports.arn}/*"]
  }
}

resource "aws_iam_policy" "exporter" {
  name        = "${var.name}-exporter"
  description = "Diagnosis Server exporter: publish export files to ${var.bucket_name}"
  policy      = data.aws_iam_policy_document.exporter.json
}

resource "aws_iam_role_policy_attachment" "exporter" {
  count = var.exporter_role_name == null ? 0 : 1

  role       = var.exporter_role_name
  policy_arn = aws_iam_policy.exporter.arn
}
