"""What Triton's log costs per request, measured, and the arithmetic of a day of logs.

Measured on this project's real Triton 2.51 (the demo model, ``--log-format=ISO8601``; 200 requests
after a warm-up; tests/serving/test_log_volume.py measures it again and holds these figures to it):

- ``--log-verbose=0``: 0 lines and 0 bytes per successful request. A failed request's answer carries
  ``[request id: ...]`` back to the client; Triton logs nothing for it at this level.
- ``--log-verbose=1``: 11 lines, about 1,731 bytes per request (each state change, with its
  request id), before Fluent Bit adds Kubernetes metadata.

And the request front's line per HTTP inference request (``components.request_front``'s request log, on
by default; a service's ``request_log`` turns it off): one JSON line with the request's id, model,
status, sizes and times, about 186 bytes with an id like ``req-42`` and no ``traceparent`` (a
traceparent adds its 55 characters). Measured on Debian's nginx with the pods' very config
(tests/serving/test_request_front.py holds this figure to it). gRPC requests do not pass the front.

Pure: the cost estimate (infra.footprint, infra.cost) and the model service (components) read it.
"""

from __future__ import annotations

from inferstack.infra.errors import InvalidInput

# --log-verbose level -> bytes Triton writes per successful request (measured, see above).
TRITON_LOG_BYTES_PER_REQUEST = {0: 0, 1: 1731}
TRITON_LOG_LINES_PER_REQUEST = {0: 0, 1: 11}
FRONT_LOG_BYTES_PER_REQUEST = 186
# How infra.footprint tells, from a service's front ConfigMap, that its request log is on.
FRONT_LOG_DIRECTIVE = "access_log /dev/stdout"
SECONDS_PER_DAY = 86_400


def bytes_per_request(log_verbose: int) -> int:
    if log_verbose not in TRITON_LOG_BYTES_PER_REQUEST:
        raise InvalidInput(
            "log_verbose",
            log_verbose,
            f"a measured level: {', '.join(map(str, TRITON_LOG_BYTES_PER_REQUEST))}",
        )
    return TRITON_LOG_BYTES_PER_REQUEST[log_verbose]


def gb_per_day(requests_per_s: float, log_verbose: int) -> float:
    """GB a day Triton writes at ``requests_per_s`` (10^9 bytes, as CloudWatch bills)."""
    if requests_per_s < 0:
        raise InvalidInput("requests_per_s", requests_per_s, "a rate >= 0")
    return requests_per_s * SECONDS_PER_DAY * bytes_per_request(log_verbose) / 1e9
