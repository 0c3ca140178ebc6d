"""HAProxy in front of the local runtime's Triton replicas: what the Kubernetes Service is in a cluster.

HTTP is balanced per request (least connections), gRPC per connection (TCP). Each replica is
health-checked on Triton's ``/v2/health/ready`` every half second and taken out after two failures,
as a readiness probe would; a request whose replica refuses the connection, closes it without an
answer, answers 503 (a draining Triton) or does not answer within ``server_timeout_s`` is sent again
to another replica. Inference is idempotent, so retrying a POST is safe; HAProxy retries what it
could buffer whole, and the buffer is sized for the requests the gateway lets through to it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass

from inferstack.infra.errors import InvalidInput

HAPROXY_HINT = "install it with `apt-get install haproxy` (bash .ci/bootstrap does, as root)"
# HAProxy only retries a request it holds whole in one buffer.
_BUFFER_BYTES = 1 << 20


@dataclass(frozen=True)
class Replica:
    """One local Triton replica's ports behind HAProxy."""

    name: str
    http_port: int
    grpc_port: int


def find_haproxy() -> str:
    path = shutil.which("haproxy")
    if path is None:
        raise FileNotFoundError(f"haproxy not found: --replicas above 1 needs it; {HAPROXY_HINT}")
    return path


def haproxy_config(
    replicas: Sequence[Replica],
    *,
    http_port: int,
    grpc_port: int,
    stats_port: int,
    server_timeout_s: float = 5.0,
) -> str:
    """haproxy.cfg text for ``replicas`` behind 127.0.0.1:http_port (HTTP) and :grpc_port (gRPC).

    HAProxy's own counters (per replica: retries, redispatches, health) are at
    ``http://127.0.0.1:stats_port/stats;csv``.
    """
    if not replicas:
        raise InvalidInput("replicas", 0, "one or more Triton replicas")
    if not 0.1 <= server_timeout_s <= 600:
        raise InvalidInput("server_timeout_s", server_timeout_s, "0.1 to 600 seconds")
    checks = "check inter 500ms fastinter 250ms fall 2 rise 2"
    http_servers = "\n".join(f"    server {r.name} 127.0.0.1:{r.http_port} {checks}" for r in replicas)
    grpc_servers = "\n".join(
        f"    server {r.name} 127.0.0.1:{r.grpc_port} {checks} port {r.http_port}" for r in replicas
    )
    return f"""global
    maxconn 4096
    tune.bufsize {_BUFFER_BYTES}
    log stdout format raw local0 notice

defaults
    log global
    timeout connect 1s
    timeout client 120s
    timeout server {int(server_timeout_s * 1000)}ms
    timeout check 1s
    retries 3
    option redispatch 1

frontend stats
    mode http
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats

frontend http
    mode http
    bind 127.0.0.1:{http_port}
    default_backend triton_http

backend triton_http
    mode http
    balance leastconn
    option httpchk GET /v2/health/ready
    http-check expect status 200
    retry-on conn-failure empty-response response-timeout 503
{http_servers}

frontend grpc
    mode tcp
    bind 127.0.0.1:{grpc_port}
    default_backend triton_grpc

backend triton_grpc
    mode tcp
    balance leastconn
    option httpchk GET /v2/health/ready
    http-check expect status 200
{grpc_servers}
"""


def retries(stats_csv: str, backend: str = "triton_http") -> dict[str, int]:
    """From HAProxy's stats CSV: requests it sent again to a replica, and to another replica."""
    lines = stats_csv.lstrip("# ").splitlines()
    header = lines[0].split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == backend and row.get("svname") == "BACKEND":
            return {"retried": int(row["wretr"] or 0), "redispatched": int(row["wredis"] or 0)}
    raise ValueError(f"no {backend} backend in HAProxy's stats")
