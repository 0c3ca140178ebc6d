"""The PromQL module: parameters are validated, and every expression parses with Prometheus's parser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from inferstack.components import promql
from inferstack.infra.errors import InvalidInput
from tests.components.promtool import check_expressions, run


def all_expressions() -> dict[str, str]:
    queries = promql.triton_queries(model="ranker", namespace="serving")
    queries |= {
        "ready": promql.triton_ready_replicas(service="ranker", namespace="serving"),
        "gpu_util": promql.gpu_utilization(namespace="serving", pod_regex="ranker-.*"),
        "by_node": promql.GPU_UTILIZATION_BY_NODE,
        "by_pod": promql.GPU_UTILIZATION_BY_POD,
        "fb_used": promql.GPU_MEMORY_USED_BYTES,
        "fb_free": promql.GPU_MEMORY_FREE_BYTES,
        "fb_ratio": promql.GPU_MEMORY_USED_RATIO,
        "power": promql.GPU_POWER_WATTS,
        "temperature": promql.GPU_TEMPERATURE_CELSIUS,
        "xid": promql.GPU_XID_ERRORS,
        "new_xid": promql.gpu_new_xid_errors(window="5m"),
        "underused": promql.gpu_underused(window="2h"),
        "spot_backoff": promql.spot_node_groups_backed_off(window="30m"),
        "front_time": promql.front_time_per_request_ms(
            namespace="serving", pod_regex=promql.deployment_pod_regex(service="ranker")
        ),
    }
    return queries


def test_every_expression_parses(tmp_path: Path) -> None:
    result = check_expressions(all_expressions(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_expression_does_fail_the_check(tmp_path: Path) -> None:
    result = check_expressions({"broken": "sum(rate(x[1m])"}, tmp_path)
    assert result.returncode != 0


def test_time_per_request_is_a_ratio_of_rates_in_ms() -> None:
    query = promql.triton_queue_time_per_request_ms(model="ranker", namespace="serving", window="2m")
    assert query == (
        '(sum by (model) (rate(nv_inference_queue_duration_us{namespace="serving",model="ranker"}[2m])) / '
        "clamp_min(sum by (model) "
        '(rate(nv_inference_request_success{namespace="serving",model="ranker"}[2m])), 1e-9)) / 1000'
    )
    assert "_bucket" not in " ".join(all_expressions().values())


def test_batch_size_divides_inferences_by_executions() -> None:
    query = promql.triton_average_batch_size(model="m", namespace="n")
    assert query.index("nv_inference_count") < query.index("nv_inference_exec_count")


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: promql.triton_request_rate(model='x"} or vector(1) #', namespace="n"), "model"),
        (lambda: promql.triton_request_rate(model="m", namespace="a b"), "namespace"),
        (lambda: promql.triton_request_rate(model="m", namespace="n", window="1 minute"), "window"),
        (lambda: promql.triton_request_rate(model="m", namespace="n", window="0m"), "window"),
        (lambda: promql.gpu_utilization(namespace="n", pod_regex='a"}'), "pod_regex"),
        (lambda: promql.triton_ready_replicas(service="", namespace="n"), "service"),
    ],
)
def test_parameters_that_could_break_or_inject_a_query_are_refused(call: object, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        call()  # type: ignore[operator]
    assert caught.value.field == field


def test_grafana_variables_are_allowed() -> None:
    assert '{namespace="$namespace",model="$model"}' in promql.triton_pending_requests(
        model="$model", namespace="$namespace"
    )


def test_triton_queries_compute_what_they_claim(tmp_path: Path) -> None:
    """Evaluated by Prometheus's engine (promtool) on series shaped as two Triton pods report them."""
    a = 'namespace="serving",service="ranker",pod="ranker-7d9f8b6c4-aaaaa",model="ranker"'
    b = 'namespace="serving",service="ranker",pod="ranker-7d9f8b6c4-bbbbb",model="ranker"'
    elsewhere = 'namespace="staging",service="ranker",pod="ranker-5c8d7f9b6-ccccc",model="ranker"'
    series = {  # 15 s apart: each pod answers 1 request/s; a queues each 10 ms, b 30 ms
        f'nv_inference_request_success{{{a},version="1"}}': "0+15x40",
        f'nv_inference_request_success{{{a},version="2"}}': "0x40",  # a second version: same pod
        f'nv_inference_request_success{{{b},version="1"}}': "0+15x40",
        f'nv_inference_queue_duration_us{{{a},version="1"}}': "0+150000x40",
        f'nv_inference_queue_duration_us{{{b},version="1"}}': "0+450000x40",
        f'nv_inference_pending_request_count{{{a},version="1"}}': "3x40",
        f'nv_inference_pending_request_count{{{b},version="1"}}': "1x40",
        f'nv_inference_request_success{{{elsewhere},version="1"}}': "0+1500x40",
        f'nv_inference_pending_request_count{{{elsewhere},version="1"}}': "100x40",
    }
    queries = promql.triton_queries(model="ranker", namespace="serving")
    expected = {  # one series each, labelled by model
        "queue_time_per_request_ms": 20,  # (10000 + 30000) us/s over 2 requests/s
        "request_rate": 2,
        "pending_requests": 4,
        "replicas": 2,  # pods, not series
    }
    test = {
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [{"series": k, "values": v} for k, v in series.items()],
                "promql_expr_test": [
                    {
                        "expr": queries[name],
                        "eval_time": "5m",
                        "exp_samples": [{"labels": '{model="ranker"}', "value": value}],
                    }
                    for name, value in expected.items()
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    result = run("test", "rules", tmp_path / "test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_deployment_pod_regex_matches_its_own_pods_only() -> None:
    regex = promql.deployment_pod_regex(service="ranker")
    # Prometheus anchors label regexes at both ends, as fullmatch does.
    assert re.fullmatch(regex, "ranker-7d9f8b6c4-x2x9q")
    assert not re.fullmatch(regex, "ranker-v2-7d9f8b6c4-x2x9q")
    assert not re.fullmatch(regex, "ranker-x2x9q")  # a DaemonSet's or StatefulSet's shape
    assert re.fullmatch(promql.deployment_pod_regex(service="a.b"), "a.b-7d9f8b6c4-x2x9q")
    assert not re.fullmatch(promql.deployment_pod_regex(service="a.b"), "axb-7d9f8b6c4-x2x9q")
    assert promql.gpu_utilization(namespace="serving", pod_regex=promql.deployment_pod_regex(service="a.b"))
