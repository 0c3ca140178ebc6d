"""ModelRepository: a built model repository shipped into a service's S3 prefix by `pulumi up` itself.

Without it the bucket is created empty in the same deploy that starts Triton on it, and nothing can be
published before the bucket exists. Here every file of the models a service loads becomes a
Pulumi-managed ``aws.s3.BucketObjectv2`` under the service's prefix, in the order a reader polling
the prefix needs (``plan_objects``): a version's files, then the model's ``config.pbtxt``, then the
model's manifest (``infra/model_cache.render_manifest``, what the pod's fill reads), each waiting for
the ones before it. The service's Deployment depends on this component, so `pulumi up` creates
bucket -> models -> services, and a destroy or a removed version deletes in the reverse order
(manifest first).

Only the versions the model's ``version_policy`` serves are uploaded: the fill fetches only those,
so any other version would cost bucket space and upload time for nothing.
``served`` (versions and bytes) is what one pod downloads; the service's cache is sized from it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws

from inferstack.infra.children import child_options
from inferstack.infra.errors import InvalidInput
from inferstack.infra.model_cache import MANIFEST, SHA256_METADATA, render_manifest, sha256_of
from inferstack.infra.model_manifest import (
    CONFIG,
    REPOSITORY_FOLDER,
    links_out,
    model_dirs,
    publishable,
    version_policy,
)
from inferstack.infra.prefixes import check_prefix


@dataclass(frozen=True)
class PlannedObject:
    """One object of the plan: ``relative`` to the service's prefix, from a file or with ``content``."""

    relative: str
    sha256: str
    size: int
    source: Path | None = None
    content: bytes | None = None
    after: tuple[str, ...] = ()  # the objects (relative keys) that must exist before this one


@dataclass(frozen=True)
class ModelPlan:
    """One model as it ships: the versions its policy serves and the objects uploaded for them, in order."""

    name: str
    versions: tuple[int, ...]  # the versions its policy serves, the only ones uploaded
    objects: tuple[PlannedObject, ...]

    @property
    def bytes(self) -> int:
        """What Triton downloads for this model: its whole folder as uploaded."""
        return sum(o.size for o in self.objects)


def _model_plan(repository: Path, model_dir: Path) -> ModelPlan:
    name = model_dir.name
    config = model_dir / CONFIG
    if not config.is_file():
        raise InvalidInput("repository", f"{repository}/{name}", f"a model folder holding {CONFIG}")
    present = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    served = version_policy(config.read_text(errors="replace")).served(present)
    absent = [v for v in served if v not in present or v < 1]
    if not served or absent:
        raise InvalidInput(
            "repository",
            f"{repository}/{name}: version folders {present}",
            "a version folder numbered from 1 for every version its version_policy serves "
            f"({served or 'the newest'})",
        )
    objects: list[PlannedObject] = []
    for version in served:
        files = sorted(p for p in (model_dir / str(version)).rglob("*") if publishable(p, repository))
        if not files:
            raise InvalidInput(
                "repository", f"{repository}/{name}/{version}", "a version folder holding its model files"
            )
        objects += [
            PlannedObject(f.relative_to(repository).as_posix(), sha256_of(f), f.stat().st_size, source=f)
            for f in files
        ]
    version_keys = tuple(o.relative for o in objects)
    config_object = PlannedObject(
        f"{name}/{CONFIG}", sha256_of(config), config.stat().st_size, source=config, after=version_keys
    )
    objects.append(config_object)
    content = render_manifest(name, {o.relative.split("/", 1)[1]: o.sha256 for o in objects}, served)
    objects.append(
        PlannedObject(
            f"{name}/{MANIFEST}",
            hashlib.sha256(content).hexdigest(),
            len(content),
            content=content,
            after=(config_object.relative,),
        )
    )
    return ModelPlan(name, tuple(served), tuple(objects))


@dataclass(frozen=True)
class ServedModels:
    """What a service's prefix holds once shipped: each model's served versions, and their bytes."""

    versions: Mapping[str, tuple[int, ...]]
    bytes: int


def served_models(plans: Sequence[ModelPlan]) -> ServedModels:
    return ServedModels({p.name: p.versions for p in plans}, sum(p.bytes for p in plans))


# The stack's checks and the component plan the same files in one run: hash them once.
@functools.cache
def plan_objects(repository: Path, models: tuple[str, ...]) -> tuple[ModelPlan, ...]:
    """The objects that ship ``models`` from the built ``repository``, each after what it needs.

    Checked before anything is registered: the folder exists, nothing links out of it, and every
    model has a config and the version folders its policy serves. (``inferstack models build``
    checks the configs against Triton's schema; the deploy program does not carry it.)
    """
    if not repository.is_dir():
        raise InvalidInput("repository", str(repository), REPOSITORY_FOLDER)
    outside = links_out(repository)
    if outside:
        raise InvalidInput("repository", outside, "files inside the repository (no links leading out of it)")
    folders = {d.name: d for d in model_dirs(repository)}
    absent = [m for m in models if m not in folders]
    if absent:
        raise InvalidInput("models", absent, f"models of the repository {repository}: {sorted(folders)}")
    return tuple(_model_plan(repository, folders[m]) for m in models)


@dataclass
class ModelRepositoryArgs:
    """What a ModelRepository uploads: a built repository's served models, into a bucket's prefix."""

    bucket: pulumi.Input[str]  # the model store's bucket name
    prefix: str  # the service's folder in it
    repository: Path  # a built repository (``inferstack models build``) on the machine running Pulumi
    models: Sequence[str]  # the models of it that ship (those the service loads)


class ModelRepository(pulumi.ComponentResource):
    """The models of one service, uploaded in reader-safe order; see the module docstring."""

    plans: tuple[ModelPlan, ...]
    served: ServedModels
    manifests: list[aws.s3.BucketObjectv2]

    def __init__(
        self, name: str, args: ModelRepositoryArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        check_prefix(args.prefix)
        plans = plan_objects(args.repository, tuple(args.models))
        super().__init__("inferstack:model_repository:ModelRepository", name, None, opts)
        self.manifests = []
        for plan in plans:
            made: dict[str, aws.s3.BucketObjectv2] = {}
            for planned in plan.objects:
                made[planned.relative] = aws.s3.BucketObjectv2(
                    f"{name}-{planned.relative}",
                    bucket=args.bucket,
                    key=f"{args.prefix}/{planned.relative}",
                    source=pulumi.FileAsset(str(planned.source)) if planned.source is not None else None,
                    content=planned.content.decode() if planned.content is not None else None,
                    # What `inferstack models publish` and `models verify` read: the same metadata.
                    metadata={SHA256_METADATA: planned.sha256},
                    checksum_algorithm="SHA256",  # S3 checks the bytes it receives
                    content_type="application/json"
                    if planned.content is not None
                    else "application/octet-stream",
                    opts=child_options(self, opts, after=[made[key] for key in planned.after]),
                )
            self.manifests.append(made[f"{plan.name}/{MANIFEST}"])
        self.plans = plans
        self.served = served_models(plans)
        self.register_outputs(
            {
                "served_versions": {name: list(v) for name, v in self.served.versions.items()},
                "served_bytes": self.served.bytes,
            }
        )
