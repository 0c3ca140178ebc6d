"""AWS foundation: network, EKS cluster, node groups and the S3 model store (pulumi-aws)."""
