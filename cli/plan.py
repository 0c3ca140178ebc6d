"""`inferstack plan` and `inferstack policy check`: the stack program run offline, shown as
`pulumi preview` would show it, or put before the policy pack."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from inferstack.cli.options import (
    Config,
    Stack,
    StacksDir,
    existing_file,
    settings,
    writable_folder,
)
from inferstack.cli.output import brief_error, error, print_table
from inferstack.infra.errors import InvalidInput

policy = typer.Typer(no_args_is_help=True, help="the CrossGuard policy pack")


def plan(
    stack: Stack,
    stacks_dir: StacksDir,
    out: Annotated[Path, typer.Option(help="where the Kubernetes manifests go")] = Path("out/plan"),
    as_json: Annotated[
        bool, typer.Option("--json", help="print the plan as `pulumi preview --json` does")
    ] = False,
    config: Config = None,
) -> int:
    """What `pulumi preview` would create, offline, with manifests written out."""
    from inferstack.stacks.offline import run_stack, stack_config, with_settings
    from inferstack.stacks.plan import preview_json, summary, tree_lines, write_manifests

    writable_folder(out, "--out")
    given = settings(config)
    recording = run_stack(stacks_dir, stack, given)
    if as_json:
        write_manifests(recording, out / stack)
        engine_config = with_settings(stack_config(stacks_dir, stack), given)
        print(json.dumps(preview_json(recording, stack, engine_config), indent=2))
        return 0
    print(f"stack {stack}: {len(recording.resources)} resources to create\n")
    for line in tree_lines(recording):
        print(line)
    print()
    print_table([["count", "type"], *([str(n), t] for t, n in summary(recording))])
    written = write_manifests(recording, out / stack)
    print(f"\n{len(written)} Kubernetes manifests written to {out / stack}, a folder per cluster:")
    for cluster, count in sorted(Counter(p.relative_to(out / stack).parts[0] for p in written).items()):
        print(f"  {out / stack / cluster}: {count} (Kubernetes provider {cluster})")
    return 0


@policy.command()
def check(
    stack: Stack,
    stacks_dir: StacksDir,
    policy_config: Annotated[
        Path | None,
        typer.Option(
            help="a `--policy-pack-config` file (default: policies/pack-config/<stack>.json where it exists)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the violations as JSON")] = False,
    config: Config = None,
) -> int:
    """Run a stack offline and check it with the policy pack (exit 0: passes, 1: a mandatory
    violation, 2: the check could not run)."""
    """Exit 0: no mandatory violation; 1: at least one; 2: the check could not run."""
    # The pack runs in a process of its own, which needs pulumi-policy: say so before running the stack.
    import pulumi_policy  # noqa: F401

    from inferstack.policies.check import check_stack
    from inferstack.stacks.offline import run_stack

    existing_file(policy_config, "--policy-config", "pack config (a JSON file)")
    try:
        recording = run_stack(stacks_dir, stack, settings(config))
        report = check_stack(recording.resources, stack, policy_config)
    except InvalidInput:
        raise
    except Exception as failure:  # the program or the pack failed: no verdict, which must not read as a pass
        error(f"the policy check could not run: {brief_error(str(failure))}")
        return 2
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
        return 1 if report.mandatory else 0
    pack = f" (pack config {report.config})" if report.config else ""
    print(f"stack {report.stack}: {report.resources} resources, {len(report.levels)} policies{pack}")
    rows = [["level", "policy", "resource", "message"]]
    for f in sorted(report.findings, key=lambda f: (not f.violation.mandatory, f.violation.policy, f.where)):
        # Long reasons wrap under their own column, so the table stays readable in a terminal.
        lines = textwrap.wrap(f.violation.reason, 70) or [""]
        rows.append(
            ["MANDATORY" if f.violation.mandatory else "advisory", f.violation.policy, f.where, lines[0]]
        )
        rows += [["", "", "", line] for line in lines[1:]]
    if report.findings:
        print_table(rows)
    advisory = len(report.findings) - len(report.mandatory)
    print(f"{len(report.mandatory)} mandatory violation(s), {advisory} advisory")
    return 1 if report.mandatory else 0
