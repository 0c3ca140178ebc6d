"""The command line's conventions: help on every flag, --version, -s, the project's error wording,
lazy heavy imports, optional-value flags, and plain output when not on a terminal."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import click
import pytest

from inferstack.cli.main import command, main
from inferstack.cli.output import print_table

ROOT = Path(__file__).resolve().parent.parent.parent
HEAVY = ("torch", "numpy", "tritonclient", "boto3", "botocore", "moto", "pulumi", "pulumi_policy", "grpc")
GROUPS = (
    [],
    ["local"],
    ["local", "up"],
    ["models"],
    ["models", "build"],
    ["models", "publish"],
    ["models", "verify"],
    ["bench"],
    ["plan"],
    ["policy"],
    ["policy", "check"],
    ["cost"],
    ["preflight"],
)


def _commands(
    group: click.Command, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], click.Command]]:
    found = [(path, group)]
    if isinstance(group, click.Group):
        for name, sub in group.commands.items():
            found += _commands(sub, (*path, name))
    return found


def test_help_loads_no_heavy_module() -> None:
    """`inferstack --help` (and each command's) on the core install: no torch, no Pulumi, no boto3."""
    code = (
        "import contextlib, io, json, sys\n"
        "from inferstack.cli.main import main\n"
        f"for argv in {[[*g, '--help'] for g in GROUPS]!r}:\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        assert main(argv) == 0, argv\n"
        "    assert 'Usage' in out.getvalue(), argv\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_every_command_and_flag_has_help() -> None:
    commands = _commands(command())
    assert {" ".join(path) for path, _ in commands} >= {" ".join(g) for g in GROUPS}
    for path, cmd in commands:
        assert cmd.help or cmd.short_help, path
        for param in cmd.params:
            assert getattr(param, "help", None), (path, param.name)


def test_version_is_the_installed_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"inferstack {metadata.version('inferstack')}\n"


def test_the_console_script_runs_the_cli() -> None:
    script = Path(sys.executable).with_name("inferstack")
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("inferstack ")


@pytest.mark.parametrize("group", [["plan"], ["cost"], ["policy", "check"]])
def test_s_is_short_for_stack(group: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # An unknown stack is refused by name after parsing: -s was taken as --stack.
    assert main([*group, "-s", "nope", "--stacks-dir", str(ROOT / "stacks")]) == 2
    assert "'nope': not valid for stack: one of the stack files" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "line"),
    [
        (
            [
                *("models", "build", "--torchscript", "m.pt", "--name", "m", "--input", "x:FP32:1"),
                *("--output", "y:FP32:1", "--out", "r", "--target", "onnx"),
            ],
            "'onnx': not valid for --target: one of 'python', 'pytorch_libtorch'",
        ),
        (["local", "up", "--replicas", "two"], "'two': not valid for --replicas: an integer"),
        (["cost", "-s", "dev", "--model-gb", "lots"], "'lots': not valid for --model-gb: a number"),
        (
            ["cost", "-s", "dev", "--prices", "no-such.json"],
            "'no-such.json': not valid for --prices: an existing JSON price table",
        ),
        (
            ["policy", "check", "-s", "dev", "--policy-config", "no-such.json"],
            "'no-such.json': not valid for --policy-config: an existing pack config (a JSON file)",
        ),
        (["plan", "-s", "dev", "-c", "novalue"], "'novalue': not valid for --config: KEY=VALUE"),
        *(
            (
                [*command, "--stacks-dir", "nowhere"],
                "'nowhere': not valid for --stacks-dir: a Pulumi program folder holding __main__.py",
            )
            for command in (
                ["plan", "-s", "dev"],
                ["cost", "-s", "dev"],
                ["policy", "check", "-s", "dev"],
                ["preflight", "-s", "dev"],
                ["bench", "--plan"],
            )
        ),
    ],
)
def test_refusals_name_value_and_field_in_one_line(
    arguments: list[str], line: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert main(arguments) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"inferstack: {line}"), err
    assert len(err.splitlines()) == 1, err


def test_a_missing_option_or_unknown_command_shows_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan"]) == 2
    assert "Missing option '-s' / '--stack'" in capsys.readouterr().err
    assert main(["deploy"]) == 2
    assert "No such command 'deploy'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "trace", "canary"),
    [
        ([], 0, None),
        (["--trace"], 5, None),
        (["--trace", "12", "--once"], 12, None),
        (["--trace", "--canary"], 5, "demo:1:2"),
        (["--canary", "ranker:1:2", "--trace"], 5, "ranker:1:2"),
        (["--canary", "--once"], 0, "demo:1:2"),
    ],
)
def test_trace_and_canary_take_a_value_or_stand_alone(
    arguments: list[str], trace: int, canary: str | None
) -> None:
    local = command()
    assert isinstance(local, click.Group)
    group = local.commands["local"]
    assert isinstance(group, click.Group)
    context = group.commands["up"].make_context("up", list(arguments))
    assert (context.params["trace"], context.params["canary"]) == (trace, canary)


def test_tables_are_plain_text_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    print_table([["model", "result"], ["demo", "ok"], ["ranker[v2]", "ERROR"]])
    assert capsys.readouterr().out == (
        "  model       result\n  ----------  ------\n  demo        ok\n  ranker[v2]  ERROR\n"
    )


def test_tables_are_drawn_and_coloured_on_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then treats the captured stdout as a terminal
    monkeypatch.delenv("NO_COLOR", raising=False)
    print_table([["model", "result"], ["demo", "ok"], ["ranker[v2]", "ERROR"]])
    out = capsys.readouterr().out
    assert "\x1b[32mok" in out  # green verdict
    assert "ranker[v2]" in out  # brackets are text, not markup
    assert "─" in out
