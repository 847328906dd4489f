# Diagnosis Server on AWS, an example: the bucket the exporter publishes to, the CloudFront
# distribution that serves every download (DESIGN §4), the retrieval edge function for the
# deployed COVID Alert apps (DESIGN §4.3), the PostgreSQL database, and the exporter's bucket
# permissions. The submit service and the exporter themselves run elsewhere (infra/k8s, or
# any container platform), with DATABASE_URL pointing at the database and BUCKET_URL at the
# bucket (output bucket_url).
#
# See infra/DEPLOYMENT.md for what has and has not been run.

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = merge({ Project = "diagnosis-server", Name = var.name }, var.tags)
  }
}
