variable "aws_region" {
  description = "AWS region of the buckets (AWS_DEFAULT_REGION in infra/k8s/base/configmap.yaml)."
  type        = string
  default     = "us-west-2"
}

variable "archive_bucket" {
  description = "Bucket of the granule archive (SOILCUBE_ARCHIVE); soilcube keeps its references under refs/."
  type        = string
  default     = "soilcube-archive"
}

variable "cube_bucket" {
  description = "Bucket of the icechunk cube repositories (SOILCUBE_STORE)."
  type        = string
  default     = "soilcube-cubes"
}

variable "oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider, for the writer role's service account (IRSA)."
  type        = string
}

variable "oidc_provider_url" {
  description = "Issuer URL of the EKS cluster's OIDC provider, without https://."
  type        = string
}

variable "namespace" {
  description = "Kubernetes namespace of the soilcube service account."
  type        = string
  default     = "soilcube"
}

variable "service_account" {
  description = "Kubernetes service account of the Dask workers and Prefect flow runs."
  type        = string
  default     = "soilcube"
}

variable "analyst_principals" {
  description = "IAM principal ARNs (users, roles, accounts) allowed to assume the read-only analyst role."
  type        = list(string)

  validation {
    condition     = length(var.analyst_principals) > 0
    error_message = "Name at least one principal that may assume the analyst role."
  }
}
