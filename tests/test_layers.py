"""The package's layering, read from its imports (every import, lazy ones in functions included).

infra <- components <- serving, policies <- stacks <- cli: a package imports only the layers below it,
and nothing imports the CLI. serving (the model toolkit) and policies (run in the Analyzer's own
process) take only Pulumi-free modules from below: pure tables, validators and arithmetic.

Inside serving, by concern: models (build, check, publish) <- client (talk to Triton) <- local (the
runtime on this machine) <- bench (may use all three). The client never imports the runtime.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {
    "infra": set(),
    "components": {"infra"},
    "serving": {"infra", "components"},
    "policies": {"infra", "components"},
    "stacks": {"infra", "components", "serving"},
    "testing": {"infra", "components", "stacks"},
    "provider": {"infra", "components"},
    "cli": {"infra", "components", "serving", "policies", "stacks"},
}
PULUMI_FREE = {"serving", "policies"}
SERVING_ALLOWED = {
    "models": set(),
    "client": {"models"},
    "local": {"models", "client"},
    "bench": {"models", "client", "local"},
}
PULUMI_SDKS = ("pulumi", "pulumi_aws", "pulumi_kubernetes", "pulumi_random")


def _module_file(module: str) -> Path | None:
    """``inferstack.serving.local`` -> serving/local.py (the package's ``__init__`` for a package)."""
    parts = module.split(".")
    if parts[0] != "inferstack" or len(parts) < 2:
        return None
    folder = ROOT.joinpath(*parts[1:])
    return folder / "__init__.py" if folder.is_dir() else folder.with_suffix(".py")


@cache
def imports(path: Path) -> frozenset[str]:
    """Every module ``path`` imports, at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from inferstack.components import promql` imports the module promql.
            found.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if (file := _module_file(f"{node.module}.{alias.name}")) is not None and file.is_file()
            )
    return frozenset(found)


def _ours(path: Path) -> set[str]:
    return {m for m in imports(path) if m.startswith("inferstack.")}


@cache
def loads_pulumi(module: str) -> bool:
    """Whether importing ``module`` loads a Pulumi SDK, directly or through our modules it imports."""
    path = _module_file(module)
    if path is None or not path.is_file():
        return False
    direct = imports(path)
    return any(m.split(".")[0] in PULUMI_SDKS for m in direct) or any(
        loads_pulumi(m) for m in direct if m.startswith("inferstack.") and m != module
    )


def _files(package: str) -> list[Path]:
    """Every module of ``package`` (a top-level folder, or ``serving/models``), sub-packages included."""
    return sorted((ROOT / package).rglob("*.py"))


def imports_where(folder: str, forbidden: Callable[[str], bool]) -> list[str]:
    """``path: module`` for each of our imports in ``folder`` that ``forbidden`` refuses."""
    return sorted(
        f"{path.relative_to(ROOT)}: {module}"
        for path in _files(folder)
        for module in _ours(path)
        if forbidden(module)
    )


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_layers_below_it(package: str) -> None:
    assert imports_where(package, lambda m: m.split(".")[1] not in ALLOWED[package] | {package}) == []


@pytest.mark.parametrize("package", sorted(PULUMI_FREE))
def test_serving_and_policies_take_only_pulumi_free_modules_from_below(package: str) -> None:
    assert imports_where(package, lambda m: m.split(".")[1] != package and loads_pulumi(m)) == []


def test_serving_has_one_subpackage_per_concern_and_nothing_loose() -> None:
    loose = {p.name for p in (ROOT / "serving").glob("*.py")} - {"__init__.py"}
    folders = {p.name for p in (ROOT / "serving").iterdir() if (p / "__init__.py").is_file()}
    assert not loose and folders == set(SERVING_ALLOWED), (loose, folders)


@pytest.mark.parametrize("concern", sorted(SERVING_ALLOWED))
def test_a_serving_concern_imports_only_those_below_it(concern: str) -> None:
    allowed = SERVING_ALLOWED[concern] | {concern}
    wrong = imports_where(
        f"serving/{concern}", lambda m: m.startswith("inferstack.serving.") and m.split(".")[2] not in allowed
    )
    assert wrong == []


def test_the_layering_check_sees_what_it_must() -> None:
    """The checks above would catch a violation: the modules they read do what the rules forbid elsewhere."""
    assert "inferstack.stacks.offline" in _ours(ROOT / "cli" / "plan.py")  # a lazy import, in a function
    assert "inferstack.components.promql" in _ours(ROOT / "components" / "canary.py")  # from-package form
    assert loads_pulumi("inferstack.components.platform")
    assert not loads_pulumi("inferstack.infra.instance_types")
    # a sub-package's module, and one the rule above forbids to the client
    assert "inferstack.serving.client.client" in _ours(ROOT / "serving" / "local" / "runtime.py")
    assert ROOT / "serving" / "models" / "build.py" in _files("serving")


def test_the_docs_layout_table_is_the_rule_this_file_enforces() -> None:
    """docs/concepts/layout.md draws the layering for readers; its table must say what is enforced here."""
    page = (ROOT / "docs" / "concepts" / "layout.md").read_text()
    table = page.split("| package | may import |", 1)[1].split("\n\n", 1)[0]
    documented = {
        row.split("|")[1].strip(" `"): {
            name.strip(" `").removeprefix("serving.") for name in row.split("|")[2].split("(")[0].split(",")
        }
        - {"-", ""}
        for row in table.strip().splitlines()[1:]
    }
    enforced = {name: set(allowed) for name, allowed in ALLOWED.items()} | {
        f"serving.{name}": set(allowed) for name, allowed in SERVING_ALLOWED.items()
    }
    assert documented == enforced


def test_no_module_of_the_package_is_much_over_450_lines() -> None:
    """About 450 lines a module (docs/concepts/layout.md): past 500, split it by what changes together,
    unless the layout page says why it is one file."""
    page = (ROOT / "docs" / "concepts" / "layout.md").read_text()
    long = [
        f"{path.relative_to(ROOT)}: {lines}"
        for package in ALLOWED
        for path in _files(package)
        if (lines := len(path.read_text().splitlines())) > 500 and f"`{path.relative_to(ROOT)}`" not in page
    ]
    assert long == []


def test_every_public_class_of_the_package_says_what_it_is() -> None:
    missing = [
        f"{path.relative_to(ROOT)}: {node.name}"
        for package in ALLOWED
        for path in _files(package)
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.ClassDef)
        and not node.name.startswith("_")
        and ast.get_docstring(node) is None
    ]
    assert missing == []
