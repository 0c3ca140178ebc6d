"""What Triton 2.51 is told to export, and the shape of what it writes: one source for both sides.

The cluster's `TritonModelService` and the local runtime start Triton with the same tracing and
logging flags, and the cluster's Fluent Bit parses Triton's log lines with the same pattern the
local runtime's `serving.triton_logs` uses. Pure: no Pulumi, no Triton; the serving toolkit
imports it as it imports the canary's pure checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from inferstack.infra.errors import InvalidInput
from inferstack.infra.log_volume import bytes_per_request

TRACES_PATH = "/v1/traces"  # OTLP/HTTP's traces endpoint: Triton's exporter posts there
OTLP_GRPC_PORT, OTLP_HTTP_PORT = 4317, 4318

# One line of Triton's log with --log-format=ISO8601:
#   2026-11-23T20:03:20Z I 6002 infer_request.cc:132] "[request id: trace-1] Setting state from ..."
# Named groups in Python's spelling; `onigmo_pattern` gives Fluent Bit's (Onigmo, Ruby syntax).
LOG_LINE_PATTERN = (
    r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (?P<level>[IWEF]) +(?P<thread>\d+) "
    r'(?P<source>[\w.]+:\d+)\] "?(?:\[request id: (?P<request_id>[^\]]+)\] )?(?P<message>.*?)"?$'
)
LOG_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # strptime's spelling, which Fluent Bit's Time_Format shares
LOG_LINE = re.compile(LOG_LINE_PATTERN)


def onigmo_pattern(pattern: str) -> str:
    """A Python regex with named groups as Onigmo (Fluent Bit's engine) spells them: ``(?<name>...)``."""
    return pattern.replace("(?P<", "(?<")


@dataclass(frozen=True)
class TraceSettings:
    """Where a Triton service sends its spans and how many requests it traces unasked.

    ``sample_rate`` is the share of requests traced (0 < rate <= 1); a request whose W3C
    ``traceparent`` is sampled is traced whatever the rate.
    """

    url: str  # an OTLP/HTTP traces endpoint, http(s)://HOST:PORT/v1/traces
    sample_rate: float = 0.01


def triton_rate(sample_rate: float) -> int:
    """Triton 2.51's ``--trace-config rate=N`` traces one request in every N: the N for a share."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | float) or not 0 < sample_rate <= 1:
        raise InvalidInput("sample_rate", sample_rate, "a share of requests, 0 < sample_rate <= 1")
    return max(1, round(1 / sample_rate))


def triton_trace_args(url: str, *, rate: int = 1, service_name: str = "triton") -> list[str]:
    """Triton's flags that export every ``rate``-th request's spans to an OTLP/HTTP ``url``.

    A request with a sampled ``traceparent`` is traced whatever the rate: the caller decides.
    """
    if rate < 1:
        raise InvalidInput("rate", rate, "an integer >= 1: trace one request in every <rate>")
    if not url.startswith(("http://", "https://")) or not url.endswith(TRACES_PATH):
        raise InvalidInput("url", url, f"an OTLP/HTTP traces endpoint, http(s)://HOST:PORT{TRACES_PATH}")
    settings = [
        "mode=opentelemetry",
        f"rate={rate}",
        "level=TIMESTAMPS",
        f"opentelemetry,url={url}",
        f"opentelemetry,resource=service.name={service_name}",
    ]
    return [arg for setting in settings for arg in ("--trace-config", setting)]


def triton_log_args(log_verbose: int = 1) -> list[str]:
    """Flags for parseable lines; at verbose 1, one line per request state change with its request id
    (about 1.7 KB a request, infra.log_volume), at 0 none for a request that succeeds."""
    bytes_per_request(log_verbose)  # refuses a level nobody measured
    return ["--log-format=ISO8601", f"--log-verbose={log_verbose}"]


def traced_triton_args(settings: TraceSettings, *, service_name: str, log_verbose: int = 0) -> list[str]:
    """Everything a Triton needs to be followed: its spans to ``settings.url`` (the sampled requests'
    ids and timings), its log at ``log_verbose`` (0 by default: request lines cost ~1.7 KB each)."""
    return [
        *triton_trace_args(settings.url, rate=triton_rate(settings.sample_rate), service_name=service_name),
        *triton_log_args(log_verbose),
    ]


def fluent_bit_throttle(records_per_s: int, *, match: str, window_s: int = 60) -> dict[str, object]:
    """Fluent Bit's ``throttle`` filter holding ``match``'s records to ``records_per_s`` on average over
    ``window_s`` (a burst may spend the window's budget; what is over it is dropped, and the filter
    prints how much). Returned as a YAML-config filter entry, to be appended to the Fluent Bit
    pipeline's filters wherever that config is built."""
    if records_per_s < 1:
        raise InvalidInput("records_per_s", records_per_s, "an integer >= 1")
    if window_s < 1:
        raise InvalidInput("window_s", window_s, "seconds >= 1")
    return {
        "name": "throttle",
        "match": match,
        "rate": records_per_s,
        "window": window_s,
        "interval": "1s",
        "print_status": True,
    }
