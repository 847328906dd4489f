# An example of the values to set; copy it outside the repository (or to terraform.tfvars, which
# must then never be committed) and fill it in. Every value here is a placeholder.
#
#   terraform init
#   terraform plan -var-file=my.tfvars
#
# The apps' HMAC secret is better passed from the environment than written into a file:
#   export TF_VAR_retrieve_hmac_key_hex=...

aws_region  = "ca-central-1"
name        = "diagnosis"
bucket_name = "example-diagnosis-exports"

vpc_id             = "vpc-0123456789abcdef0"
private_subnet_ids = ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"]

db_client_security_group_ids = ["sg-0123456789abcdef0"]

# exporter_role_name = "diagnosis-exporter"
# cloudfront_aliases  = ["exports.example.org"]
# acm_certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
