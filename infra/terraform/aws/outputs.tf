output "cloudfront_domain_name" {
  description = "Domain name of the distribution: the apps' and phones' download host (unless cloudfront_aliases are set)."
  value       = aws_cloudfront_distribution.exports.domain_name
}

output "cloudfront_distribution_id" {
  description = "ID of the distribution (for invalidations)."
  value       = aws_cloudfront_distribution.exports.id
}

output "bucket_name" {
  description = "Name of the export bucket."
  value       = aws_s3_bucket.exports.bucket
}

output "bucket_url" {
  description = "The exporter's BUCKET_URL."
  value       = var.bucket_prefix == "" ? "s3://${aws_s3_bucket.exports.bucket}/" : "s3://${aws_s3_bucket.exports.bucket}/${var.bucket_prefix}"
}

output "db_endpoint" {
  description = "Host name and port of the database, for DATABASE_URL (see database_url_template)."
  value       = aws_db_instance.db.endpoint
}

output "database_url_template" {
  description = "DATABASE_URL for both binaries, TLS verified against the RDS CA bundle in the image; replace USER and PASSWORD with the binary's own role (infra/DEPLOYMENT.md)."
  value       = "postgres://USER:PASSWORD@${aws_db_instance.db.endpoint}/diagnosis?sslmode=verify-full&sslrootcert=/etc/diagnosis/db-ca/rds-global-bundle.pem"
}

output "db_master_user_secret_arn" {
  description = "Secrets Manager secret holding the master user's password."
  value       = aws_db_instance.db.master_user_secret[0].secret_arn
}

output "exporter_policy_arn" {
  description = "IAM policy with the exporter's bucket permissions."
  value       = aws_iam_policy.exporter.arn
}
