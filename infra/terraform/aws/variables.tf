variable "aws_region" {
  description = "AWS region of the bucket and the database (CloudFront is global)."
  type        = string
  default     = "ca-central-1"
}

variable "name" {
  description = "Prefix of every resource name, e.g. \"diagnosis\" or \"diagnosis-staging\"."
  type        = string
  default     = "diagnosis"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name must be 2-31 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

# --- bucket and CDN ---------------------------------------------------------------------------

variable "bucket_name" {
  description = "Name of the export bucket (globally unique). The exporter's BUCKET_URL is s3://BUCKET_NAME/ (output bucket_url)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name: 3-63 lower-case letters, digits, dots or hyphens."
  }
}

variable "bucket_prefix" {
  description = "Prefix of BUCKET_URL inside the bucket (s3://BUCKET_NAME/PREFIX), without slashes at either end; \"\" (the default) for none. CDN paths are object keys relative to it."
  type        = string
  default     = ""

  validation {
    condition     = var.bucket_prefix == "" || can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.bucket_prefix))
    error_message = "bucket_prefix must be empty or path segments separated by single slashes, with no slash at either end."
  }
}

variable "cloudfront_price_class" {
  description = "CloudFront price class: PriceClass_100 (North America and Europe), PriceClass_200 or PriceClass_All."
  type        = string
  default     = "PriceClass_100"

  validation {
    condition     = contains(["PriceClass_100", "PriceClass_200", "PriceClass_All"], var.cloudfront_price_class)
    error_message = "cloudfront_price_class must be PriceClass_100, PriceClass_200 or PriceClass_All."
  }
}

variable "cloudfront_aliases" {
  description = "Host names the distribution answers to besides its *.cloudfront.net name (needs acm_certificate_arn)."
  type        = list(string)
  default     = []
}

variable "acm_certificate_arn" {
  description = "ARN of an ACM certificate in us-east-1 covering cloudfront_aliases; null serves the *.cloudfront.net certificate."
  type        = string
  default     = null
}

variable "retrieve_hmac_key_hex" {
  description = "The COVID Alert apps' HMAC_KEY (hex, at least 32 bytes), baked into the retrieval function (DESIGN §4.3). During a rotation, up to 4 such keys separated by commas."
  type        = string
  sensitive   = true

  validation {
    condition     = can(regex("^([0-9a-fA-F]{2}){32,}(,([0-9a-fA-F]{2}){32,}){0,3}$", var.retrieve_hmac_key_hex))
    error_message = "retrieve_hmac_key_hex must be hex of at least 32 bytes (64 hex digits); up to 4 such keys separated by commas."
  }
}

variable "compat_region_path" {
  description = "The MCC in the apps' retrieval path /retrieve/{MCC}/... (the exporter's COMPAT_REGION_PATH)."
  type        = string
  default     = "302"

  validation {
    condition     = can(regex("^[0-9]{3}$", var.compat_region_path))
    error_message = "compat_region_path must be three digits, such as 302."
  }
}

# --- database ---------------------------------------------------------------------------------

variable "vpc_id" {
  description = "VPC of the database (and of the submit service and exporter that use it)."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets of the database, in at least two availability zones."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "private_subnet_ids needs subnets in at least two availability zones."
  }
}

variable "db_client_security_group_ids" {
  description = "Security groups allowed to reach PostgreSQL: those of the nodes or tasks running diagnosis-submit and diagnosis-exporter."
  type        = list(string)
  default     = []
}

variable "db_engine_version" {
  description = "PostgreSQL version; a major version alone takes RDS's current minor version."
  type        = string
  default     = "15"
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_allocated_storage" {
  description = "Initial storage in GiB."
  type        = number
  default     = 20
}

variable "db_max_allocated_storage" {
  description = "Storage autoscaling ceiling in GiB."
  type        = number
  default     = 100
}

variable "db_username" {
  description = "Master user name; its password is generated and kept in Secrets Manager."
  type        = string
  default     = "diagnosis"
}

variable "db_multi_az" {
  description = "Run a standby in a second availability zone."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Days of automated backups. Keys live 15 days in the database, so at most 6 keeps every copy of personal data within 21 days (DESIGN §4.2)."
  type        = number
  default     = 5

  validation {
    condition     = var.db_backup_retention_days >= 1 && var.db_backup_retention_days <= 6
    error_message = "db_backup_retention_days must be between 1 and 6."
  }
}

# --- exporter ---------------------------------------------------------------------------------

variable "exporter_role_name" {
  description = "Name of an existing IAM role the exporter runs as, to attach the bucket policy to; null to attach output exporter_policy_arn yourself."
  type        = string
  default     = null
}
