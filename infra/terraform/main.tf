# Two buckets and two roles: the writer (Dask workers and Prefect flow runs, through the Kubernetes service
# account) reads the granules and writes the cubes; the analyst reads the cubes and nothing else.

resource "aws_s3_bucket" "archive" {
  bucket = var.archive_bucket
}

resource "aws_s3_bucket" "cubes" {
  bucket = var.cube_bucket
}

# Writer -------------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "writer_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${var.oidc_provider_url}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${var.service_account}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${var.oidc_provider_url}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "writer" {
  statement {
    sid       = "ListBuckets"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.archive.arn, aws_s3_bucket.cubes.arn]
  }

  statement {
    sid       = "ReadGranules"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.archive.arn}/*"]
  }

  # soilcube refs persists the kerchunk references and the granule index next to the archive.
  statement {
    sid       = "WriteReferences"
    actions   = ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.archive.arn}/refs/*"]
  }

  # Icechunk commits, tags, rollbacks and garbage collection.
  statement {
    sid       = "ReadWriteCubes"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.cubes.arn}/*"]
  }
}

resource "aws_iam_role" "writer" {
  name               = "soilcube-writer"
  assume_role_policy = data.aws_iam_policy_document.writer_trust.json
}

resource "aws_iam_role_policy" "writer" {
  name   = "soilcube-writer"
  role   = aws_iam_role.writer.id
  policy = data.aws_iam_policy_document.writer.json
}

# Analyst ------------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "analyst_trust" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "AWS"
      identifiers = var.analyst_principals
    }
  }
}

data "aws_iam_policy_document" "analyst" {
  statement {
    sid       = "ListCubes"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.cubes.arn]
  }

  statement {
    sid       = "ReadCubes"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.cubes.arn}/*"]
  }
}

resource "aws_iam_role" "analyst" {
  name               = "soilcube-analyst"
  assume_role_policy = data.aws_iam_policy_document.analyst_trust.json
}

resource "aws_iam_role_policy" "analyst" {
  name   = "soilcube-analyst"
  role   = aws_iam_role.analyst.id
  policy = data.aws_iam_policy_document.analyst.json
}
