"""Kubernetes platform layer: GPU operators, monitoring and autoscaling (pinned Helm charts)."""
