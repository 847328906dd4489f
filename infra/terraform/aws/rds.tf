# PostgreSQL 15, the only shared state of submit and exporter. Private (in var.private_subnet_ids,
# reachable only from var.db_client_security_group_ids), encrypted at rest, protected from
# deletion. The master password is generated and kept by RDS in Secrets Manager (output
# db_master_user_secret_arn), never in the Terraform state. The master user owns the schema: it
# runs `migrate` and creates the services' login users (infra/DEPLOYMENT.md, "Database roles");
# the services' DATABASE_URL names those users, never the master user.
#
# The binaries connect to PostgreSQL without TLS (inside the VPC, reachable only from the
# client security groups). RDS for PostgreSQL 15 and later refuses such connections by default
# (rds.force_ssl = 1), so the parameter group below turns that off; the binaries cannot connect
# to this database with it on.

resource "aws_db_subnet_group" "db" {
  name        = "${var.name}-db"
  description = "Diagnosis Server database"
  subnet_ids  = var.private_subnet_ids
}

resource "aws_db_parameter_group" "db" {
  name        = "${var.name}-db"
  description = "Diagnosis Server database: the binaries connect without TLS"
  family      = "postgres${split(".", var.db_engine_version)[0]}"

  parameter {
    name  = "rds.force_ssl"
    value = "0"
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
