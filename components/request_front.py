"""The request front: nginx with its njs module in front of Triton's HTTP port, in every model-service pod.

Triton 2.51 aborts on an HTTP/JSON inference request whose *declared* shape is huge (see
``serving/client/limits.py``), and it has no request-size flag. In the cluster, Triton's HTTP server listens
on loopback only and this front owns the pod's HTTP port: every ``POST .../infer`` is read whole
(bounded by the byte limit), its declared shapes are checked by ``request_front.js`` against the
model's config, which the front asks the pod's own Triton for (cached a few seconds), and only a
request that fits is handed to Triton. Triton's admin APIs (model repository, shared memory, trace and
log settings) are answered 403 by the front itself, key or no key; everything else (health, metadata,
statistics) passes through.
gRPC does not go through the front: Triton checks a gRPC request's shape against its data before it
allocates (a ``[8, 2**40]`` FP32 gRPC request gets INVALID_ARGUMENT, tested on the real 2.51).

The nginx.conf and the script are pure text; only the paths and ports differ between the pod and the
test that runs the very same files with Debian's nginx and njs in front of the real Triton.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files

from inferstack.infra.log_volume import FRONT_LOG_DIRECTIVE

# The official image ships ngx_http_js_module (njs 0.8.x). Pinned, not pulled here: this machine reaches
# no container registry; the tests run the same files on Debian's nginx 1.22 with njs 0.7.9. Docker's
# official images, mirrored on ECR Public (same image as Docker Hub's `nginx:1.28.0`): every GPU node
# pulls it, and Docker Hub allows anonymous pulls only a few per hour per NAT address.
FRONT_IMAGE = "public.ecr.aws/docker/library/nginx:1.28.0"
FRONT_UID = 101  # the image's nginx user
MODULE_PATH = "/usr/lib/nginx/modules/ngx_http_js_module.so"  # in the image and in Debian's package
CONFIG_DIR = "/etc/request-front"  # the ConfigMap, read-only
TEMP_DIR = "/tmp/request-front"  # an emptyDir: pid, body and proxy temp files, the config cache
CONF_FILE, SCRIPT_FILE = "nginx.conf", "request_front.js"
# What a request may carry in tensor data, here and in the client and the local gateway (serving.limits):
# the 64 MiB default of Triton's later --http-max-input-size, the flag 2.51 does not have.
MAX_REQUEST_BYTES = 64 << 20
# The JSON header of a request, beside its tensor data: the local runtime's gateway allows the same.
HEADER_ALLOWANCE = 1 << 20
# A loaded model's config changes only on a reload; a few seconds of staleness costs nothing.
CONFIG_CACHE_S = 5
LIVE_PATH = "/request-front/live"  # the front's own liveness, answered without Triton
# The front's own Prometheus metrics: the time inference requests spend in it (its $request_time less
# Triton's $upstream_response_time). njs 0.7.9 keeps nothing between requests (shared dictionaries
# came in 0.8.0), so nginx appends one line per inference request to TIMES_LOG and whichever handler
# serves the metrics or the liveness probe folds those lines into counters in TIMES_STATE. One worker
# runs every handler to the end before the next event, so no line is appended between the fold's read
# and its truncation; the liveness probe bounds the log to a probe period of requests when no one scrapes.
METRICS_PATH = "/metrics"
TIMES_LOG, TIMES_STATE = "front-times.log", "front-times.json"
# The request log: one JSON line per inference request, refused or answered, on the front's stdout
# (Fluent Bit's `front_access` parser reads it). `request_id` is the `id` of the request's JSON (or its
# binary request's JSON header), the id Triton answers with; empty when the request named none.
# nginx (uid 101, the container's PID 1) reopens /dev/stdout: runc's fixStdioPermissions hands PID 1's
# stdio to the container's user before it starts, so the open is allowed without root.
ACCESS_FORMAT = "front_access"
REQUEST_ID_CHARS = 256  # the most of an id the line keeps (request_front.js; a test holds the two equal)
ACCESS_FIELDS = {
    "time": "$time_iso8601",
    "request_id": "$inference_id",
    "model": "$model",
    "status": "$status",
    "request_bytes": "$request_length",
    "response_bytes": "$bytes_sent",
    "seconds": "$request_time",
    "triton_seconds": "$upstream_response_time",
    "traceparent": "$http_traceparent",
}
# nginx writes these four as plain numbers; the others may be empty (a refused request never reached
# Triton) or a list ("0.1, 0.2": nginx tried twice).
ACCESS_NUMBERS = ("status", "request_bytes", "response_bytes", "seconds")
ACCESS_LINE = (
    "{"
    + ",".join(
        f'"{key}":{value}' if key in ACCESS_NUMBERS else f'"{key}":"{value}"'
        for key, value in ACCESS_FIELDS.items()
    )
    + "}"
)
# Triton's admin APIs, as Triton 2.51 routes them: it matches the raw request path
# (``/v2/repository/../index`` is its repository index, ``/v2/%72epository/index`` a 404), so the front
# matches the raw $request_uri, query included, and not nginx's normalised $uri.
ADMIN_PATHS = (
    r"^/v2/(repository|systemsharedmemory|cudasharedmemory|logging"
    r"|(models/[^/?]+/(versions/[^/?]+/)?)?trace/setting)([/?]|$)"
)


@dataclass(frozen=True)
class FrontPaths:
    """Where the front listens, where Triton is, and where its files are: all that differs between
    the pod and the test."""

    listen_port: int
    triton_port: int
    metrics_port: int
    config_dir: str = CONFIG_DIR
    temp_dir: str = TEMP_DIR
    module_path: str = MODULE_PATH


def script() -> str:
    return files("inferstack.components").joinpath(SCRIPT_FILE).read_text()


def nginx_conf(
    paths: FrontPaths, *, max_request_bytes: int = MAX_REQUEST_BYTES, request_log: bool = True
) -> str:
    body_limit = max_request_bytes + HEADER_ALLOWANCE
    request_log_line = f"\n            {FRONT_LOG_DIRECTIVE} {ACCESS_FORMAT};" if request_log else ""
    temp = paths.temp_dir
    upstream = f"127.0.0.1:{paths.triton_port}"
    too_large = json.dumps(
        {"error": f"refused before reaching Triton: the body is over the {body_limit} byte limit"}
    )
    admin = json.dumps(
        {
            "error": "refused before reaching Triton: its admin APIs (model repository, shared memory, "
            "trace and log settings) are not served through the request front"
        }
    )
    return f"""# Generated by inferstack.components.request_front; see that module and {SCRIPT_FILE}.
load_module {paths.module_path};
daemon off;
worker_processes 1;
pid {temp}/nginx.pid;
error_log stderr warn;

events {{
    worker_connections 1024;
}}

http {{
    js_import front from {paths.config_dir}/{SCRIPT_FILE};
    access_log off;
    # One line per inference request: what the metrics handler folds into its counters.
    log_format front_times '$request_time $upstream_response_time';
    # And one JSON line per inference request on stdout, with the id the request carries: at
    # --log-verbose=0 Triton writes nothing per request, so this is the request's only log line.
    js_var $inference_id;
    log_format {ACCESS_FORMAT} escape=json '{ACCESS_LINE}';
    default_type application/json;
    # The root filesystem is read-only: every file nginx writes goes to the temp folder.
    client_body_temp_path {temp}/client-body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    proxy_cache_path {temp}/model-configs keys_zone=model_configs:1m max_size=8m inactive=60s;
    # The whole body in one memory buffer: njs reads r.requestBuffer only from memory, never from a file.
    client_max_body_size {body_limit};
    client_body_buffer_size {body_limit};
    client_body_in_single_buffer on;

    upstream triton {{
        server {upstream};
        keepalive 16;
    }}

    server {{
        listen {paths.listen_port};
        error_page 413 @too_large;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        # A long inference is not a dead upstream; the client's own timeout governs.
        proxy_read_timeout 300s;
        # Large answers wait in memory for a slow client rather than fill the pod's small temp folder.
        proxy_max_temp_file_size 0;

        # Before any location: Triton restricts these itself too (its admin key), never parses them here.
        if ($request_uri ~ "{ADMIN_PATHS}") {{
            return 403 '{admin}';
        }}

        location ~ ^/v2/models/(?<model>[^/]+)(/versions/[0-9]+)?/infer$ {{
            set $max_request_bytes {max_request_bytes};
            access_log {temp}/{TIMES_LOG} front_times;{request_log_line}
            js_content front.infer;
        }}

        location @triton {{
            access_log {temp}/{TIMES_LOG} front_times;{request_log_line}
            proxy_pass http://triton;
        }}

        # The model's config, from the pod's own Triton: the limits the check applies.
        location /_front/model-config/ {{
            internal;
            proxy_pass http://triton/v2/models/;
            proxy_method GET;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Connection "";
            proxy_cache model_configs;
            # $request_uri would be the parent request's: the subrequest's own URI is the key.
            proxy_cache_key $uri;
            proxy_cache_valid 200 {CONFIG_CACHE_S}s;
            proxy_cache_lock on;
        }}

        location = {LIVE_PATH} {{
            set $front_temp {temp};
            js_content front.live;
        }}

        location @too_large {{
            return 413 '{too_large}';
        }}

        location / {{
            proxy_pass http://triton;
        }}
    }}

    server {{
        listen {paths.metrics_port};
        location = {METRICS_PATH} {{
            set $front_temp {temp};
            js_content front.metrics;
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""


def nginx_command(paths: FrontPaths) -> list[str]:
    """nginx in the foreground on the generated config, logging to stderr from its first line."""
    return ["nginx", "-e", "stderr", "-c", f"{paths.config_dir}/{CONF_FILE}"]


def config_files(
    paths: FrontPaths, *, max_request_bytes: int = MAX_REQUEST_BYTES, request_log: bool = True
) -> dict[str, str]:
    """File name -> text: what the ConfigMap holds and the test writes to disk."""
    conf = nginx_conf(paths, max_request_bytes=max_request_bytes, request_log=request_log)
    return {CONF_FILE: conf, SCRIPT_FILE: script()}
