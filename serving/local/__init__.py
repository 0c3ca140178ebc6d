"""The local runtime: moto S3, the real Triton, the validating gateway, HAProxy, Prometheus, span receiver
and Triton's log lines, all on loopback."""
