# PostgreSQL 15, the only shared state of submit and exporter. Private (in var.private_subnet_ids,
# reachable only from var.db_client_security_group_ids), encrypted at rest, protected from
# deletion. The master password is generated and kept by RDS in Secrets Manager (output
# db_master_user_secret_arn), never in the Terraform state. The master user owns the schema: it
# runs `migrate` and creates the services' login users (infra/DEPLOYMENT.md, "Database roles");
# the services' DATABASE_URL names those users, never the master user.
#
# Both binaries reach the database over TLS and authenticate it (DESIGN §6, §7): DATABASE_URL
# carries sslmode=verify-full and sslrootcert naming the RDS CA bundle that the container image
# ships (/etc/diagnosis/db-ca/rds-global-bundle.pem, fetched when the image is built: see
# infra/docker/Dockerfile). The parameter group states rds.force_ssl = 1, the default of
# PostgreSQL 15 on RDS, so that nothing can later connect in plain text, and wal_compression; output
# database_url_template gives the connection string without its password.

resource "aws_db_subnet_group" "db" {
  name        = "${var.name}-db"
  description = "Diagnosis Server database"
  subnet_ids  = var.private_subnet_ids
}

resource "aws_db_parameter_group" "db" {
  name        = "${var.name}-db"
  description = "Diagnosis Server database: TLS required, WAL compressed"
  family      = "postgres${split(".", var.db_engine_version)[0]}"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  # Random keys change pages all over the key index: compressed full-page images keep the
  # WAL every commit waits for small after each checkpoint (infra/DEPLOYMENT.md).
  parameter {
    name  = "wal_compression"
    value = "lz4"
  }
}

resource "aws_security_group" "db" {
  name        = "${var.name}-db"
  description = "Diagnosis Server database: PostgreSQL from the submit service and the exporter"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "db" {
  for_each = toset(var.db_client_security_group_ids)

  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from ${each.value}"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

resource "aws_db_instance" "db" {
  identifier     = "${var.name}-db"
  engine         = "postgres"
  engine_version = var.db_engine_version
  instance_class = var.db_instance_class

  allocated_storage     = var.db_allocated_storage
  max_allocated_storage = var.db_max_allocated_storage
  storage_type          = "gp3"
  storage_encrypted     = true

  db_name                     = "diagnosis"
  username                    = var.db_username
  manage_master_user_password = true
  port                        = 5432

  parameter_group_name   = aws_db_parameter_group.db.name
  db_subnet_group_name   = aws_db_subnet_group.db.name
  vpc_security_group_ids = [aws_security_group.db.id]
  publicly_accessible    = false
  multi_az               = var.db_multi_az

  # Keys are deleted after 15 days (DESIGN §4.2); backups keep them for as many days again
  # as they are retained, so at most 6 days keep every copy within 21 days.
  backup_retention_period   = var.db_backup_retention_days
  copy_tags_to_snapshot     = true
  deletion_protection       = true
  skip_final_snapshot       = false
  final_snapshot_identifier = "${var.name}-db-final"

  auto_minor_version_upgrade = true
  apply_immediately          = false
}
