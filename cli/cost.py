"""`inferstack cost`: a stack's monthly cost by resource group, spot against on-demand."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from inferstack.cli.options import (
    Config,
    Stack,
    StacksDir,
    existing_file,
    settings,
    writable_file,
)
from inferstack.cli.output import print_table


def cost(
    stack: Stack,
    stacks_dir: StacksDir,
    prices_file: Annotated[
        Path | None,
        typer.Option("--prices", help="a JSON price table over the packaged one (same keys, any subset)"),
    ] = None,
    model_gb: Annotated[float, typer.Option(help="size of the model store in GB")] = 20.0,
    requests_per_s: Annotated[
        float, typer.Option("--requests-per-s", help="requests a second over all services: prices their logs")
    ] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="print a machine-readable estimate")] = False,
    plot: Annotated[Path | None, typer.Option(metavar="OUT.png", help="also write a bar chart")] = None,
    config: Config = None,
) -> int:
    """Monthly cost estimate of a stack by resource group, spot vs on-demand."""
    from inferstack.components.platform_config import parse_config
    from inferstack.infra.cost import estimate, load_prices
    from inferstack.infra.footprint import footprint
    from inferstack.stacks.offline import run_stack, stack_config, with_settings

    existing_file(prices_file, "--prices", "JSON price table")
    writable_file(plot, "--plot")
    prices = load_prices(prices_file)
    region = stack_config(stacks_dir, stack).get("aws:region", prices.region)
    recording = run_stack(stacks_dir, stack, settings(config))  # checks the config first
    reserved = parse_config(with_settings(stack_config(stacks_dir, stack), settings(config))).gpu.reserved
    result = estimate(
        footprint(recording),
        prices,
        model_gb=model_gb,
        reserved_hourly=reserved.hourly_price if reserved else None,
        requests_per_s=requests_per_s,
    )
    sources = {
        key: getattr(prices, key) for key in ("source", "date", "region", "currency", "spot_discount_source")
    }
    if as_json:
        summary = {
            "stack": stack,
            "region": region,
            "lines": [asdict(line) for line in result.lines],
            "total": result.total,
            "all_on_demand": result.all_on_demand,
            "spot_saving_pct": result.spot_saving_pct,
            "prices": sources,
        }
        print(json.dumps(summary, indent=2))
    else:
        print(f"stack {stack}: monthly estimate ({prices.currency}, {prices.hours_per_month:g} h/month)")
        if region != prices.region:
            print(f"note: priced at {prices.region}'s prices; the stack runs in {region}")
        print()
        rows = [
            [line.group, f"{line.monthly:,.2f}" + ("" if line.in_total else " *"), line.detail]
            for line in result.lines
        ]
        print_table([["group", "per month", "what"], *rows, ["total", f"{result.total:,.2f}", ""]])
        print(
            f"\nall on demand: {result.all_on_demand:,.2f}; spot saves {result.spot_saving_pct:.1f} %"
            "\n* spot at min and max: the range the autoscaler may take, not in the total"
            f"\nprices: {prices.source} (as of {prices.date})\nspot discounts: {prices.spot_discount_source}"
        )
    if plot:
        from inferstack.serving.bench.cost_chart import write_bar_chart

        written = write_bar_chart(result, prices, title=f"stack {stack}", path=plot)
        print(f"bar chart written to {written}", file=sys.stderr if as_json else sys.stdout)
    return 0
