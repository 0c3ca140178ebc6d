"""MkDocs hooks: the reference pages are generated from the code when the site is built, and the
benchmark's plot is served from where the bench writes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
PLOT = ROOT / "serving" / "bench" / "results" / "bench.png"


def _generated(marker: str) -> str:
    # Imported here: the hooks module is loaded before the site's pages, and only these pages need them.
    if marker == "config-reference":
        from inferstack.components.platform_config import reference_table

        return reference_table()
    if marker == "policy-reference":
        from inferstack.policies.reference import reference_table as policy_table

        return policy_table()
    from inferstack.provider.reference import reference

    return reference()


def on_page_markdown(markdown: str, **_: Any) -> str:
    for marker in ("config-reference", "policy-reference", "component-reference"):
        tag = f"<!-- inferstack:{marker} -->"
        if tag in markdown:
            markdown = markdown.replace(tag, _generated(marker))
    return markdown


def on_files(files: Files, config: Any, **_: Any) -> Files:
    files.append(File.generated(config, "assets/bench.png", abs_src_path=str(PLOT)))
    return files
