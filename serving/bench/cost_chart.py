"""The bar chart of ``inferstack cost --plot``: monthly cost per resource group, spot levels side by side."""

from __future__ import annotations

from pathlib import Path

from inferstack.infra.cost import Estimate, Prices
from inferstack.serving.bench.figures import pyplot_for, save


def write_bar_chart(estimate: Estimate, prices: Prices, *, title: str, path: Path) -> Path:
    pyplot = pyplot_for(path, option="--plot")
    groups = [line.group for line in estimate.lines]
    values = [line.monthly for line in estimate.lines]
    figure, axes = pyplot.subplots(figsize=(9, 0.5 * len(groups) + 1.8))
    colours = ["#4c72b0" if line.in_total else "#c0c0c0" for line in estimate.lines]
    bars = axes.barh(groups[::-1], values[::-1], color=colours[::-1])
    axes.bar_label(bars, labels=[f"{v:,.0f}" for v in values[::-1]], padding=3)
    axes.set_xlabel(f"{prices.currency} per month ({prices.region} prices of {prices.date})")
    axes.set_title(
        f"{title}: {estimate.total:,.0f} {prices.currency}/month, "
        f"{estimate.spot_saving_pct:.0f} % saved by spot\n(grey: spot at its min and max, not in the total)",
        fontsize=11,
    )
    axes.margins(x=0.15)
    return save(pyplot, figure, path)
