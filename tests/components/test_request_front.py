"""The request front's generated files: what holds them to the Python rule and to the pod.

The files run for real in tests/serving/test_request_front.py (Debian's nginx and njs before the real
Triton); here, what that run cannot see: the pod's own paths, and the constants written twice.
"""

from __future__ import annotations

import json
import re

from inferstack.components.model_service import checks
from inferstack.components.request_front import (
    ACCESS_FORMAT,
    CONF_FILE,
    HEADER_ALLOWANCE,
    REQUEST_ID_CHARS,
    SCRIPT_FILE,
    FrontPaths,
    config_files,
    nginx_command,
    nginx_conf,
    script,
)
from inferstack.infra.log_volume import FRONT_LOG_DIRECTIVE
from inferstack.serving.client import limits

POD = FrontPaths(listen_port=8000, triton_port=8080, metrics_port=8003)


def directives(conf: str, name: str) -> list[str]:
    return re.findall(rf"^[ \t]*{name}[ \t]+([^;{{}}\n]*);", conf, flags=re.MULTILINE)


def test_the_constants_written_twice_are_equal() -> None:
    """The script is JavaScript: its copy of the datatype sizes is held to the Python table here."""
    table = re.search(r"^var ELEMENT_BYTES = (\{.*\});$", script(), flags=re.MULTILINE)
    assert table is not None and json.loads(table.group(1)) == dict(limits.ELEMENT_BYTES)
    names = re.search(r"^var MODEL_NAME = /(.*)/;$", script(), flags=re.MULTILINE)
    assert names is not None and names.group(1) == checks._MODEL_NAME.pattern
    assert f"\nvar REQUEST_ID_CHARS = {REQUEST_ID_CHARS};\n" in script()


def test_the_whole_body_is_read_into_memory_up_to_the_limit() -> None:
    conf = nginx_conf(POD, max_request_bytes=1000)
    # njs reads a body only from memory: the buffer is as large as the largest body accepted.
    assert (
        directives(conf, "client_max_body_size")
        == directives(conf, "client_body_buffer_size")
        == [str(1000 + HEADER_ALLOWANCE)]
    )
    assert directives(conf, "client_body_in_single_buffer") == ["on"]
    assert [d for d in directives(conf, "set") if d.startswith("$max_request_bytes")] == [
        "$max_request_bytes 1000"
    ]


def test_triton_is_reached_on_loopback_and_the_front_listens_on_the_pods_port() -> None:
    conf = nginx_conf(POD)
    assert directives(conf, "listen") == ["8000", "8003"]  # requests, then the front's own metrics
    assert directives(conf, "server") == ["127.0.0.1:8080"]
    assert set(directives(conf, "proxy_pass")) == {"http://triton", "http://triton/v2/models/"}
    # Inference requests, any version, go to the check; the config lookup is internal only.
    infer = re.search(
        r"location ~ (\S+) \{\s*set \$max_request_bytes \d+;\s*(access_log [^;]+;\s*)+js_content front.infer;",
        conf,
    )
    assert infer is not None
    pattern = re.compile(infer.group(1).replace("(?<model>", "(?P<model>"))
    for path, model in (("/v2/models/demo/infer", "demo"), ("/v2/models/demo/versions/2/infer", "demo")):
        match = pattern.match(path)
        assert match is not None and match.group("model") == model
    for path in ("/v2/models/demo/config", "/v2/models/demo", "/v2/models/demo/infer/x"):
        assert pattern.match(path) is None
    assert re.search(r"location /_front/model-config/ \{\s*internal;", conf)


def test_every_file_nginx_writes_is_under_the_temp_folder() -> None:
    """The pod's root filesystem is read-only; only the temp folder is a writable emptyDir."""
    conf = nginx_conf(POD)
    written = [
        *directives(conf, "pid"),
        *(
            directives(conf, f"{kind}_temp_path")[0]
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        ),
        directives(conf, "proxy_cache_path")[0].split()[0],
        *(log.split()[0] for log in directives(conf, "access_log") if log != "off" and "/dev/" not in log),
    ]
    assert len(written) == 9  # pid, five temp paths, the cache, the times log (infer and @triton)
    assert all(path.startswith(POD.temp_dir + "/") for path in written)
    # The request log goes to the container's stdout, nothing else to a device.
    devices = [log for log in directives(conf, "access_log") if "/dev/" in log]
    assert [f"access_log {log}" for log in devices] == [f"{FRONT_LOG_DIRECTIVE} {ACCESS_FORMAT}"] * 2
    # A service's request_log off: the times log only.
    quiet = nginx_conf(POD, request_log=False)
    assert FRONT_LOG_DIRECTIVE not in quiet and len(directives(quiet, "access_log")) == 3
    assert directives(conf, "error_log") == ["stderr warn"]
    assert directives(conf, "proxy_max_temp_file_size") == ["0"]  # answers never spill to disk


def test_only_paths_and_ports_differ_between_the_pod_and_the_test() -> None:
    other = FrontPaths(1234, 5678, 4321, config_dir="/x/conf", temp_dir="/x/tmp", module_path="/x/mod.so")
    normalised = nginx_conf(other)
    for mine, theirs in (
        ("8000", "1234"),
        ("8080", "5678"),
        ("8003", "4321"),
        (POD.config_dir, "/x/conf"),
        (POD.temp_dir, "/x/tmp"),
        (POD.module_path, "/x/mod.so"),
    ):
        normalised = normalised.replace(theirs, mine)
    assert normalised == nginx_conf(POD)
    assert config_files(other)[SCRIPT_FILE] == config_files(POD)[SCRIPT_FILE] == script()
    assert nginx_command(other) == ["nginx", "-e", "stderr", "-c", f"/x/conf/{CONF_FILE}"]
    assert directives(nginx_conf(other), "js_import") == [f"front from /x/conf/{SCRIPT_FILE}"]
