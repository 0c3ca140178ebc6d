"""Talking to Triton: the client, the request limits it checks, answers compared, canary traffic split and
cross-region failover. Never imports the local runtime."""
