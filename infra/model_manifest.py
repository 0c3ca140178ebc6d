"""A built Triton model repository as files to publish, and which of its versions are served.

Pure and Pulumi-free: the deploy (``components/model_repository.py``) and the out-of-band publisher
(``serving/models/publish.py``) read the same layout. Each model folder of the repository holds
``config.pbtxt`` and numbered version folders; in S3, beside them, the manifest is written last, in
the one format the pod's fill reads (``infra/model_cache.py``: ``render_manifest``,
``parse_manifest``): every file's sha256 and the versions served. Its presence means every file it
lists was uploaded before it. Triton ignores the file (it is not a version folder).

Which versions a model serves is its config's ``version_policy`` (Triton's default: the newest one).
Triton copies a model's whole folder, every version in it, to its local cache before loading any:
only the served versions belong in the prefix Triton reads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from inferstack.infra.errors import InvalidInput

CONFIG = "config.pbtxt"
# What a model repository folder must be, wherever one is refused.
REPOSITORY_FOLDER = f"an existing folder holding <model>/{CONFIG}"


def publishable(path: Path, repository: Path) -> bool:
    """Whether ``path`` belongs to the model: hidden files (an interrupted build's staging folder) and
    Python's caches do not."""
    parts = path.relative_to(repository).parts
    return (
        path.is_file()
        and path.suffix != ".pyc"
        and not any(part == "__pycache__" or part.startswith(".") for part in parts)
    )


def model_dirs(repository: Path) -> list[Path]:
    return sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))


def links_out(repository: Path) -> list[str]:
    """Links under ``repository`` that resolve outside it (or nowhere): never published."""
    root = repository.resolve()
    found = []
    for folder, dirs, files in os.walk(repository):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            if path.is_symlink() and (not path.exists() or not path.resolve().is_relative_to(root)):
                found.append(path.relative_to(repository).as_posix())
    return found


# --- version policy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionPolicy:
    """Triton's ModelVersionPolicy: ``latest`` (the ``count`` newest), ``all``, or ``specific``."""

    kind: str = "latest"
    count: int = 1
    versions: tuple[int, ...] = ()

    def served(self, present: Sequence[int]) -> list[int]:
        """The versions Triton loads under this policy from the version folders ``present``."""
        ordered = sorted(present)
        if self.kind == "specific":
            return sorted(self.versions)
        if self.kind == "all":
            return ordered
        return ordered[-self.count :] if ordered else []


_COMMENT = re.compile(r"#[^\n]*")
_POLICY = re.compile(r"\bversion_policy\s*:?\s*\{")


def _block(text: str, start: int) -> str:
    """The text inside the braces opened just before ``start``."""
    depth = 1
    for position in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return text[start:position]
    raise InvalidInput(CONFIG, text[start - 16 : start + 40], "balanced braces in version_policy")


def version_policy(config_text: str) -> VersionPolicy:
    """The ``version_policy`` of a config.pbtxt, read from its text (protobuf text format) without
    Triton's schema: the deploy program does not carry tritonclient."""
    text = _COMMENT.sub("", config_text)
    found = _POLICY.search(text)
    if found is None:
        return VersionPolicy()
    block = _block(text, found.end())
    if re.search(r"\ball\s*:?\s*\{", block):
        return VersionPolicy("all")
    specific = re.search(r"\bspecific\s*:?\s*\{", block)
    if specific:
        inner = _block(block, specific.end())
        listed = re.findall(r"\bversions\s*:\s*(\[[^\]]*\]|-?\d+)", inner)
        versions = tuple(int(v) for item in listed for v in re.findall(r"-?\d+", item))
        return VersionPolicy("specific", versions=versions)
    count = re.search(r"\bnum_versions\s*:\s*(\d+)", block)
    return VersionPolicy("latest", count=int(count.group(1)) if count else 1)
