"""The cost estimate: one stack's arithmetic by hand, the footprint read from recorded resources,
the price table and its override, and the `inferstack cost` command for every stack."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from inferstack.cli.main import main
from inferstack.infra.cost import PRICES_FILE, estimate, load_prices
from inferstack.infra.errors import InvalidInput
from inferstack.infra.footprint import footprint
from inferstack.infra.log_volume import FRONT_LOG_BYTES_PER_REQUEST, bytes_per_request, gb_per_day
from inferstack.stacks import offline
from tests.conftest import ROOT
from tests.harness import DEPLOYER, DEPLOYER_ARGS, Recorded
from tests.stacks.test_failover_stack import STANDBY, STANDBY_ARGS

STACKS = ROOT / "stacks"


@pytest.fixture(scope="module")
def dev() -> offline.Recording:
    return offline.run_stack(STACKS, "dev", DEPLOYER)


def test_dev_by_hand(dev: offline.Recording) -> None:
    """dev: 2 zones, one NAT, 1 system m7i.xlarge per zone, 1 on-demand g5.xlarge per zone, spot g5.xlarge
    (0 to 2 per zone), the demo service at 1 replica of 1 GPU; 730 h, g5 spot at 65 % off."""
    result = estimate(footprint(dev), load_prices(), model_gb=20)
    lines = {line.group: line.monthly for line in result.lines}
    by_hand = {
        "control plane": 0.10 * 730,  # 73.00
        "NAT": (1 * 0.045 + 1 * 0.005) * 730,  # gateway hour + its Elastic IP: 36.50
        "system nodes": 2 * 0.2016 * 730,  # 294.336
        "GPU on-demand baseline": 2 * 1.006 * 730,  # 1468.76
        "GPU spot (min)": 0.0,
        "GPU spot (expected)": 1 * 1.006 * 0.35 * 730,  # one replica's GPU: 257.033
        "GPU spot (max)": 4 * 1.006 * 0.35 * 730,  # 2 zones x 2: 1028.132
        # volumes: 2 x 50 GiB system, 2 x 200 GiB on demand, 1 x 200 GiB spot; 20 GB of models;
        # 2 KMS keys (the cluster's secrets, its volumes)
        "storage": 700 * 0.08 + 20 * 0.023 + 2 * 1.0,  # 58.46
        "load balancers": 0.0,
        "logs": 0.0,  # no request rate given
    }
    assert lines == pytest.approx(by_hand, abs=1e-6)
    total = 73.0 + 36.5 + 294.336 + 1468.76 + 257.033 + 58.46  # spot min and max are not added
    assert result.total == pytest.approx(total, abs=1e-6)
    all_on_demand = total - 257.033 + 1 * 1.006 * 730
    assert result.all_on_demand == pytest.approx(all_on_demand, abs=1e-6)
    assert result.spot_saving_pct == pytest.approx(100 * (all_on_demand - total) / all_on_demand)
    assert 17.9 < result.spot_saving_pct < 18.0


def test_the_standbys_load_balancers_and_fast_health_checks_are_counted() -> None:
    fp = footprint(offline.run_stack(STACKS, "prod-dr", STANDBY))
    assert (fp.load_balancers, fp.health_check_intervals) == (2, (10, 10))
    lines = {line.group: line.monthly for line in estimate(fp, load_prices()).lines}
    assert lines["load balancers"] == pytest.approx(2 * 0.0225 * 730 + 2 * (0.5 + 1.0))


def deployment(placement_values: list[str], replicas: int = 4, gpus: int = 2) -> Recorded:
    pod: dict[str, Any] = {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "inferstack.io/capacity-type", "values": placement_values}
                            ]
                        }
                    ]
                }
            }
        },
        "containers": [{"name": "triton", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
    }
    inputs = {"spec": {"replicas": replicas, "template": {"spec": pod}}}
    return Recorded("kubernetes:apps/v1:Deployment", "svc", inputs, "", True, "urn:svc")


def test_only_services_that_may_run_on_spot_ask_spot_for_gpus() -> None:
    assert footprint([deployment(["spot", "on-demand"])]).spot_gpu_demand == 8
    assert footprint([deployment(["spot"], replicas=1, gpus=1)]).spot_gpu_demand == 1
    assert footprint([deployment(["on-demand"])]).spot_gpu_demand == 0
    assert footprint([deployment(["on-demand"])]).on_demand_gpu_demand == 8


KARPENTER = {**DEPLOYER, "inferstack:capacity": "karpenter"}
RESERVED = (
    '{"kind": "capacity-block", "reservationIds": ["cr-0123456789abcdef0", "cr-0123456789abcdef1"], '
    '"instanceType": "g5.12xlarge", "instances": 2, "zone": "us-east-1a", "hourlyPrice": 3.5}'
)


def test_dev_on_karpenter_by_hand() -> None:
    """dev with Karpenter: no idle on-demand GPU node (nodes follow the pods, and the demo service may
    run on spot); the spot pool reaches its limit of 2 zones x 2 nodes; GPU volumes are the node
    class's 200 GiB."""
    result = estimate(footprint(offline.run_stack(STACKS, "dev", KARPENTER)), load_prices(), model_gb=20)
    lines = {line.group: line.monthly for line in result.lines}
    assert lines == pytest.approx(
        {
            "control plane": 0.10 * 730,
            "NAT": (1 * 0.045 + 1 * 0.005) * 730,
            "system nodes": 2 * 0.2016 * 730,  # one per zone
            "GPU on-demand baseline": 0.0,
            "GPU spot (min)": 0.0,
            "GPU spot (expected)": 1 * 1.006 * 0.35 * 730,
            "GPU spot (max)": 4 * 1.006 * 0.35 * 730,
            "storage": (2 * 50 + 1 * 200) * 0.08 + 20 * 0.023 + 2 * 1.0,  # 2 KMS keys: secrets, volumes
            "load balancers": 0.0,
            "logs": 0.0,  # no request rate given
        },
        abs=1e-6,
    )


def test_an_on_demand_only_service_gets_on_demand_pool_nodes() -> None:
    recording = offline.run_stack(STACKS, "dev", KARPENTER)
    pools = [r for r in recording if r.type == "kubernetes:karpenter.sh/v1:NodePool"]
    fp = footprint([*pools, deployment(["on-demand"], replicas=3, gpus=1)])
    (on_demand,) = [g for g in fp.node_groups if not g.spot]
    assert (on_demand.desired_size, on_demand.max_size, on_demand.instance_type) == (3, 4, "g5.xlarge")


@pytest.mark.parametrize("mode", ["managed-node-groups", "karpenter"])
def test_reserved_capacity_is_priced_whole_in_both_modes(mode: str) -> None:
    settings = {**DEPLOYER, "inferstack:capacity": mode, "inferstack:gpu.reserved": RESERVED}
    fp = footprint(offline.run_stack(STACKS, "dev", settings))
    reserved = [g for g in fp.node_groups if g.reserved]
    assert sum(g.max_size for g in reserved) == 4 and {g.instance_type for g in reserved} == {"g5.12xlarge"}
    lines = {line.group: line for line in estimate(fp, load_prices(), reserved_hourly=3.5).lines}
    assert lines["GPU reserved"].monthly == pytest.approx(4 * 3.5 * 730)
    assert lines["GPU reserved"].in_total
    # An ODCR costs the on-demand price: without a price, the table's.
    odcr = {line.group: line for line in estimate(fp, load_prices()).lines}
    assert odcr["GPU reserved"].monthly == pytest.approx(4 * 5.672 * 730)
    # Not counted as baseline or spot.
    assert lines["GPU on-demand baseline"].detail.endswith("g5.xlarge")


def test_the_packaged_table_is_dated_and_sourced() -> None:
    prices = load_prices()
    assert prices.date == json.loads(PRICES_FILE.read_text())["date"] and prices.source.startswith("AWS")
    for family in ("g4dn", "g5", "g6"):
        assert 0 < prices.spot_discount[family] < 1


def test_a_price_file_overrides_what_it_names(tmp_path: Path, dev: offline.Recording) -> None:
    override = tmp_path / "prices.json"
    override.write_text(json.dumps({"date": "2027-01-01", "on_demand_hourly": {"g5.xlarge": 2.0}}))
    prices = load_prices(override)
    assert prices.date == "2027-01-01" and prices.on_demand_hourly["g6.xlarge"] == 0.8048  # merged
    lines = {line.group: line.monthly for line in estimate(footprint(dev), prices).lines}
    assert lines["GPU on-demand baseline"] == pytest.approx(2 * 2.0 * 730)


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ({"spot_discount": {"g5": 1.2}}, "prices.spot_discount.g5"),
        ({"discounts": {}}, "--prices"),
        ([1, 2], "--prices"),
    ],
)
def test_bad_price_files(tmp_path: Path, content: Any, field: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InvalidInput) as caught:
        load_prices(path)
    assert caught.value.field == field


def test_an_unpriced_instance_type_is_named(dev: offline.Recording) -> None:
    prices = load_prices()
    table = {k: v for k, v in prices.on_demand_hourly.items() if k != "m7i.xlarge"}
    unpriced = dataclasses.replace(prices, on_demand_hourly=table)
    with pytest.raises(InvalidInput) as caught:
        estimate(footprint(dev), unpriced)
    assert (caught.value.field, caught.value.value) == ("prices.on_demand_hourly", "m7i.xlarge")


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_cost_prints_a_table_for_every_stack(stack: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "--stack", stack, "--stacks-dir", str(STACKS), *DEPLOYER_ARGS]) == 0
    out = capsys.readouterr().out
    for group in (
        "control plane",
        "NAT",
        "GPU on-demand baseline",
        "GPU spot (expected)",
        "storage",
        "total",
    ):
        assert f"\n  {group}" in out
    assert "spot saves" in out and "as of 2026-11-23" in out and "Spot Instance Advisor" in out


def test_cost_json_and_bar_chart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chart = tmp_path / "cost.png"
    arguments = ["cost", "--stack", "prod-dr", "--stacks-dir", str(STACKS), *STANDBY_ARGS]
    assert main([*arguments, "--json", "--plot", str(chart)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["region"] == "us-west-2" and summary["prices"]["region"] == "us-east-1"
    assert summary["total"] == pytest.approx(sum(x["monthly"] for x in summary["lines"] if x["in_total"]))
    header = chart.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width >= 600 and height >= 300
    assert main([*arguments]) == 0
    assert "priced at us-east-1's prices; the stack runs in us-west-2" in capsys.readouterr().out


def test_a_day_of_logs_is_priced_from_the_measured_bytes_per_request(dev: offline.Recording) -> None:
    """1,000 req/s on the demo service: at Triton's default level only the request front's line, 186 B
    a request (~16 GB a day, ~$68 a month); at --log-verbose=1 Triton's measured ~1.7 KB a request on top
    is ~150 GB a day, ~4,500 GB and ~$2,270 a month of ingestion."""
    fp = footprint(dev)
    assert fp.service_log_bytes == (FRONT_LOG_BYTES_PER_REQUEST,) == (186,)
    quiet = {line.group: line for line in estimate(fp, load_prices(), requests_per_s=1000).lines}
    assert quiet["logs"].monthly == pytest.approx(1000 * 186 * 3600 * 730 / 1e9 * 0.5)
    assert "186 B a request" in quiet["logs"].detail
    verbose = dataclasses.replace(fp, service_log_bytes=(bytes_per_request(1),))
    line = next(x for x in estimate(verbose, load_prices(), requests_per_s=1000).lines if x.group == "logs")
    gb_month = 1000 * 1731 * 3600 * 730 / 1e9
    assert gb_per_day(1000, 1) == pytest.approx(1000 * 1731 * 86400 / 1e9)  # 149.6 GB a day
    assert line.monthly == pytest.approx(gb_month * 0.5) and "1731 B a request" in line.detail


def test_a_service_with_its_request_log_off_costs_no_front_lines() -> None:
    """The per-service setting reaches the price: the ConfigMap the pod mounts has no request log."""
    quiet = offline.run_stack(STACKS, "dev", {**DEPLOYER, "inferstack:services[0].requestLog": "false"})
    assert footprint(quiet).service_log_bytes == (0,)
