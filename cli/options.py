"""Options several commands share, and the checks of what they are given."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from inferstack.infra.errors import InvalidInput
from inferstack.infra.model_manifest import CONFIG, REPOSITORY_FOLDER

Stack = Annotated[
    str,
    typer.Option("-s", "--stack", help="dev, staging, prod, prod-dr: a Pulumi.<stack>.yaml in --stacks-dir"),
]


def _packaged_program() -> Path:
    """The program and stack files that ship in the package: `plan`, `policy check` and `cost` run
    from any folder (an editable install finds the checkout's ``stacks/``)."""
    spec = importlib.util.find_spec("inferstack.stacks")
    assert spec is not None and spec.submodule_search_locations, "inferstack.stacks is a package"
    return Path(next(iter(spec.submodule_search_locations)))


def _program_folder(path: Path) -> Path:
    if not (path / "__main__.py").is_file():
        raise InvalidInput("--stacks-dir", str(path), "a Pulumi program folder holding __main__.py")
    return path


# Defaulted and checked as it is parsed, before a command starts: every command that takes it refuses a
# wrong one alike.
StacksDir = Annotated[
    Path,
    typer.Option(
        "--stacks-dir",
        help="the Pulumi program folder and its Pulumi.<stack>.yaml files; default: the one inferstack ships",
        show_default=False,
        default_factory=_packaged_program,
        callback=_program_folder,
    ),
]


def _model_repository(path: Path | None) -> Path | None:
    if path is not None and not any(path.glob(f"*/{CONFIG}")):
        raise InvalidInput("--repository", str(path), REPOSITORY_FOLDER)
    return path


def repository_option(default: str) -> Any:
    """``--repository``, refused as it is parsed unless it holds a model; ``default``: what runs without."""
    return typer.Option(help=f"a model repository folder (default: {default})", callback=_model_repository)


Config = Annotated[
    list[str] | None,
    typer.Option(
        "-c",
        "--config",
        metavar="KEY=VALUE",
        help="a stack setting, as `pulumi config set --path KEY VALUE` would make it "
        "(e.g. 'inferstack:cluster.publicAccessCidrs=[\"198.51.100.7/32\"]'); repeatable",
    ),
]
EndpointUrl = Annotated[
    str | None, typer.Option("--endpoint-url", help="a non-AWS S3 endpoint, e.g. http://127.0.0.1:5000")
]


def settings(pairs: Sequence[str] | None) -> dict[str, str]:
    """``-c KEY=VALUE`` pairs as the stack settings they give."""
    given = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInput("--config", pair, "KEY=VALUE, such as inferstack:cluster.name=ml-prod")
        given[key] = value
    return given


def existing_file(path: Path | None, field: str, what: str) -> None:
    """A file argument that must be there (None: not given)."""
    if path is not None and not path.is_file():
        raise InvalidInput(field, str(path), f"an existing {what}")


def writable_folder(path: Path | None, field: str) -> None:
    """A folder the command will write into: made (with its parents) and written to once, then what
    was made removed again, so a path that cannot hold output is refused in one line before any work
    starts. None: not given."""
    if path is None:
        return
    made = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".inferstack-write-check"
        probe.write_bytes(b"")
        probe.unlink()
        for folder in made:  # the command makes them when it writes: a refused command leaves none
            folder.rmdir()
    except OSError as failure:
        raise InvalidInput(
            field, str(path), f"a folder that can be created and written ({failure.strerror})"
        ) from None


def writable_file(path: Path | None, field: str) -> None:
    """A file the command will write: its folder must take it (see ``writable_folder``)."""
    if path is None:
        return
    if path.is_dir():
        raise InvalidInput(field, str(path), "a file path, not a folder")
    writable_folder(path.parent, field)
