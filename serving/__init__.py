"""Triton model services: repository building, publishing, client, local runtime and benchmarks."""
