"""The ``inferstack`` command line: one Typer app over the command groups of this package.

Heavy imports (torch, tritonclient, boto3, moto, pulumi_policy) happen inside the commands that need
them, so ``inferstack --help`` is instant and works on the core install. Bad input exits with code 2
and one line naming the field; a command whose extra is not installed says which one to install.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Annotated

import click
import typer

from inferstack.cli import bench, cost, interrupt, local, models, plan, preflight
from inferstack.cli.output import error
from inferstack.infra.errors import InvalidInput

app = typer.Typer(
    name="inferstack",
    help="GPU model serving on AWS with Triton.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(local.app, name="local")
app.add_typer(models.app, name="models")
app.command()(bench.bench)
app.command()(plan.plan)
app.add_typer(plan.policy, name="policy")
app.command()(cost.cost)
app.command()(preflight.preflight)


def _show_version(shown: bool) -> None:
    if shown:
        print(f"inferstack {metadata.version('inferstack')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="print the installed version and exit"
        ),
    ] = False,
) -> None:
    """GPU model serving on AWS with Triton."""


def command() -> click.Command:
    """The Click command behind ``app``, with the options that take a value or stand alone."""
    root = typer.main.get_command(app)
    assert isinstance(root, click.Group)
    up = root.commands["local"]
    assert isinstance(up, click.Group)
    for param in up.commands["up"].params:
        if isinstance(param, click.Option) and param.name in local.OPTIONAL_VALUES:
            # Click's optional value (`--trace` alone or `--trace 10`); Typer does not pass it through.
            param._flag_needs_value = True
            param.flag_value = local.OPTIONAL_VALUES[param.name]
    return root


# The extra that brings each third-party module a command may import (pyproject's optional deps).
_EXTRAS = {
    "torch": "serving",
    "numpy": "serving",
    "tritonclient": "serving",
    "boto3": "serving",
    "botocore": "serving",
    "grpc": "serving",
    "moto": "local",
    "pulumi_policy": "policy",
    "matplotlib": "plot",
    "fastapi": "bench",
    "uvicorn": "bench",
}
# The extra each command group needs whole: naming the first missing module's extra would send a user
# of `local up` round twice (serving first, then local).
_COMMAND_EXTRAS = {
    "local": "local",
    "models": "serving",
    "bench": "bench",
    "policy": "policy",
    "preflight": "aws",
}


def missing_extra(module: str, arguments: Sequence[str] = ()) -> str | None:
    """The extra to install when ``module`` failed to import under the command ``arguments``."""
    extra = _EXTRAS.get(module.split(".")[0])
    if extra is None:
        return None
    return next((_COMMAND_EXTRAS[a] for a in arguments[:1] if a in _COMMAND_EXTRAS), extra)


# Click's own conversion errors start with the value: "'x' is not a valid integer." or
# "'x' is not one of 'python', 'pytorch_libtorch'."
_CLICK_REFUSAL = re.compile(r"^(?P<value>'.*') is not (?:a valid )?(?P<allowed>.+?)\.?$")
_CLICK_TYPES = {"integer": "an integer", "float": "a number"}


def _bad_parameter(refused: click.BadParameter) -> str:
    """Click's refusal of a flag's value in the project's wording: VALUE: not valid for FIELD: ALLOWED."""
    field = max(refused.param.opts, key=len) if refused.param is not None else "argument"
    found = _CLICK_REFUSAL.match(refused.message)
    if found is None:
        return f"{field}: {refused.message}"
    allowed = _CLICK_TYPES.get(found["allowed"], found["allowed"])
    return f"{found['value']}: not valid for {field}: {allowed}"


def main(argv: Sequence[str] | None = None) -> int:
    interrupt.install()
    arguments = list(sys.argv[1:] if argv is None else argv)

    def failed(message: str, code: int) -> int:
        """One line on stderr; under --json also an error object on stdout, where the answer would be."""
        error(message)
        if "--json" in arguments:
            print(json.dumps({"ok": False, "error": message, "exit_code": code}))
        return code

    try:
        code = command().main(args=arguments, prog_name="inferstack", standalone_mode=False)
        interrupt.check()  # Typer answers an interrupted command with 130 alone: say so, and exit now
    except click.MissingParameter as missing:
        missing.show()
        return missing.exit_code
    except click.BadParameter as refused:
        return failed(_bad_parameter(refused), 2)
    except click.ClickException as refused:  # a missing option, an unknown flag or command: with usage
        refused.show()
        return refused.exit_code
    except InvalidInput as invalid:
        return failed(str(invalid), 2)
    except (KeyboardInterrupt, click.exceptions.Abort):
        print(file=sys.stderr)
        stopped = failed("stopped", 130)
        if argv is None:
            # The command's own process, its children stopped and its folders removed: what is left
            # is the interpreter unloading torch, seconds on a busy machine that Ctrl-C should not wait.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(stopped)
        return stopped
    except ModuleNotFoundError as missing:
        extra = missing_extra(missing.name or "", arguments)
        if extra is None:
            raise
        return failed(
            f"this command needs the {extra} extra (module {missing.name} is not installed): "
            f"pip install 'inferstack[{extra}]'",
            2,
        )
    except OSError as failure:  # a full disk, a file where a folder was to go: what the system said
        where = f"{failure.filename}: " if failure.filename else ""
        return failed(f"{where}{failure.strerror or failure}", 1)
    except Exception as failure:
        from inferstack.serving.local.processes import RuntimeFailure

        if isinstance(failure, RuntimeFailure):
            return failed(str(failure), 1)
        raise
    # --help and --version return 0 (Click's exit code) or None.
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
