"""MkDocs hooks: the reference pages are generated from the code when the site is built, and the
benchmark's plots are served from where the bench wrote them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "serving" / "bench" / "results"
PLOTS = ("bench.png", "bench-quiet.png")


def _generated(marker: str) -> str:
    # Imported here: the hooks module is loaded before the site's pages, and only these pages need them.
    if marker == "config-reference":
        from inferstack.components.config_keys import reference_table

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
    for plot in PLOTS:
        files.append(File.generated(config, f"assets/{plot}", abs_src_path=str(RESULTS / plot)))
    return files
