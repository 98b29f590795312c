output "archive_url" {
  description = "SOILCUBE_ARCHIVE"
  value       = "s3://${aws_s3_bucket.archive.bucket}"
}

output "store_url" {
  description = "SOILCUBE_STORE"
  value       = "s3://${aws_s3_bucket.cubes.bucket}"
}

output "writer_role_arn" {
  description = "Annotation eks.amazonaws.com/role-arn of the soilcube service account (infra/k8s/base)."
  value       = aws_iam_role.writer.arn
}

output "analyst_role_arn" {
  description = "Role that analysts assume to open the cubes read-only."
  value       = aws_iam_role.analyst.arn
}
