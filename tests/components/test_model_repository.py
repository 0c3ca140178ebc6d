"""ModelRepository: which objects ship a built repository, in which order, and what the pods are told."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inferstack.components.model_repository import (
    ModelRepository,
    ModelRepositoryArgs,
    plan_objects,
    served_models,
)
from inferstack.infra.errors import InvalidInput
from inferstack.infra.model_cache import MANIFEST
from inferstack.infra.model_manifest import VersionPolicy, version_policy
from inferstack.serving.models.config import parse_config
from inferstack.serving.models.repository import versions_served_by
from tests.conftest import ROOT
from tests.harness import run_invalid, run_program

DEMO = ROOT / "stacks" / "demo-repository"


def repository(tmp_path: Path, policy: str, versions: list[int], name: str = "ranker") -> Path:
    """The stack's demo model with ``versions`` folders and ``policy`` in its config."""
    model = tmp_path / "repo" / name
    model.mkdir(parents=True)
    text = (DEMO / "ranker" / "config.pbtxt").read_text().replace('"ranker"', f'"{name}"')
    text = text.replace("version_policy: { latest: { num_versions: 1 } }", policy)
    (model / "config.pbtxt").write_text(text)
    for version in versions:
        (model / str(version)).mkdir()
        (model / str(version) / "model.py").write_text(f"# version {version}\n")
    return tmp_path / "repo"


POLICIES = [
    "",
    "version_policy: { latest: { num_versions: 2 } }",
    "version_policy { latest { num_versions: 3 } }",
    "version_policy: { all: {} }",
    "version_policy { all { } }",
    "version_policy: { specific: { versions: [1, 3] } }",
    "version_policy { specific { versions: 2 versions: 3 } }",
    "# version_policy: { all: {} }\nversion_policy: { specific: { versions: [3] } }",
]


@pytest.mark.parametrize("policy", POLICIES)
def test_the_policy_read_from_text_is_the_one_tritons_schema_reads(policy: str, tmp_path: Path) -> None:
    repo = repository(tmp_path, policy, [1, 2, 3])
    text = (repo / "ranker" / "config.pbtxt").read_text()
    config = parse_config(text, folder="ranker")
    assert version_policy(text).served([1, 2, 3]) == versions_served_by(config.version_policy, [1, 2, 3])


@given(st.lists(st.integers(1, 9), min_size=1, unique=True), st.integers(1, 4))
def test_latest_serves_the_newest_present(present: list[int], count: int) -> None:
    assert VersionPolicy("latest", count).served(present) == sorted(present)[-count:]


def test_versions_come_before_their_config_and_the_manifest_last(tmp_path: Path) -> None:
    repo = repository(tmp_path, "version_policy: { latest: { num_versions: 2 } }", [1, 2, 3])
    (plan,) = plan_objects(repo, ("ranker",))
    keys = [o.relative for o in plan.objects]
    assert keys == ["ranker/2/model.py", "ranker/3/model.py", "ranker/config.pbtxt", f"ranker/{MANIFEST}"]
    config, manifest = plan.objects[-2:]
    assert set(config.after) == {"ranker/2/model.py", "ranker/3/model.py"}
    assert manifest.after == ("ranker/config.pbtxt",)
    assert plan.versions == (2, 3)  # version 1 is outside the policy: it does not ship
    assert plan.bytes == sum(o.size for o in plan.objects)


def test_the_manifest_is_the_one_models_publish_writes(tmp_path: Path) -> None:
    from inferstack.serving.models.publish import _manifest, upload_order

    repo = repository(tmp_path, "", [1])
    # The shape `models publish` checks a model.pt for: a zip with code and a data pickle.
    with zipfile.ZipFile(repo / "ranker" / "1" / "model.pt", "w") as archive:
        archive.writestr("model/data.pkl", b"data")
        archive.writestr("model/code/__torch__.py", b"code")
    (plan,) = plan_objects(repo, ("ranker",))
    order = upload_order(repo)
    local = {o.relative: o.sha256 for o in plan.objects[:-1]}
    assert plan.objects[-1].content == _manifest(repo, "ranker", order, local)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda repo: shutil.rmtree(repo / "ranker" / "1"), "version folder"),
        (lambda repo: (repo / "ranker" / "config.pbtxt").unlink(), "config.pbtxt"),
        (lambda repo: shutil.rmtree(repo), "existing folder"),
        (lambda repo: (repo / "ranker" / "1" / "x").symlink_to("/etc/passwd"), "no links"),
    ],
)
def test_a_repository_that_cannot_ship_is_refused_before_anything_is_registered(
    tmp_path: Path, change: object, says: str
) -> None:
    repo = repository(tmp_path, "", [1])
    change(repo)  # type: ignore[operator]
    args = ModelRepositoryArgs(bucket="models", prefix="ranker", repository=repo, models=["ranker"])
    recording, error = run_invalid(lambda: ModelRepository("ranker-models", args))
    assert error.field == "repository" and says in error.allowed + str(error.value), error
    assert not recording.resources


def test_each_object_is_created_after_what_it_needs(tmp_path: Path) -> None:
    repo = repository(tmp_path, "version_policy: { all: {} }", [1, 2])
    args = ModelRepositoryArgs(bucket="models", prefix="team/ranker", repository=repo, models=["ranker"])
    recording, served = run_program(lambda: ModelRepository("ranker-models", args).served)
    objects = {
        o.name.removeprefix("ranker-models-"): o
        for o in recording.of_type("aws:s3/bucketObjectv2:BucketObjectv2")
    }
    urn = {name: o.urn for name, o in objects.items()}
    assert set(objects["ranker/config.pbtxt"].dependencies) == {
        urn["ranker/1/model.py"],
        urn["ranker/2/model.py"],
    }
    assert objects[f"ranker/{MANIFEST}"].dependencies == (urn["ranker/config.pbtxt"],)
    assert objects["ranker/1/model.py"].inputs["key"] == "team/ranker/ranker/1/model.py"
    sha = objects["ranker/1/model.py"].inputs["metadata"]["sha256"]
    assert sha == plan_objects(repo, ("ranker",))[0].objects[0].sha256
    assert served.versions == {"ranker": (1, 2)}


def test_served_models_sum_what_a_pod_downloads(tmp_path: Path) -> None:
    repo = repository(tmp_path, "", [1, 2])
    served = served_models(plan_objects(repo, ("ranker",)))
    on_disk = (
        sum(p.stat().st_size for p in (repo / "ranker" / "2").iterdir())
        + (repo / "ranker" / "config.pbtxt").stat().st_size
    )
    assert served.bytes > on_disk  # the manifest counted too: a little over what the fill places
    assert served.versions == {"ranker": (2,)}


def test_an_unknown_model_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="models of the repository") as raised:
        plan_objects(repository(tmp_path, "", [1]), ("missing",))
    assert raised.value.field == "models" and raised.value.value == ["missing"]
