"""Property-based: any single TritonModelServiceArgs value either builds a service whose manifests
validate, or is refused with one line naming the field, before anything is registered."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferstack.infra.errors import InvalidInput
from inferstack.infra.fields import check_field_types
from inferstack.policies.plan import manifest
from inferstack.serving.model_service import ModelSource, TritonModelService, TritonModelServiceArgs
from tests.conftest import ROOT
from tests.harness import run_program
from tests.schemas import validate_custom_resource, validate_k8s

BUILT_IN = {"v1", "apps/v1", "policy/v1"}
VENDOR = Path(os.environ.get("INFERSTACK_VENDOR_DIR", ROOT.parent / "shared" / "vendor"))
BASE = TritonModelServiceArgs(
    models=["ranker"],
    source=ModelSource(role_arn="arn:aws:iam::123456789012:role/ranker", repository_uri="s3://models/ranker"),
)
FIELDS = [
    f.name
    for f in dataclasses.fields(TritonModelServiceArgs)
    if f.name not in ("source", "provider", "service_monitor_labels", "prometheus_server_address")
]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**4), 10**4),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(
        ["prod", "dev", "spot", "on-demand", "g5.xlarge", "p4d.24xlarge", "eu-west-1", "nvcr.io/x:1"]
    ),
    st.lists(st.sampled_from(["ranker", "x", "", "a b"]), max_size=3),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(FIELDS), value=VALUES)
def test_a_value_builds_or_is_refused_in_one_line_naming_its_field(name: str, value: Any) -> None:
    args = dataclasses.replace(BASE, **{name: value})
    outcome: list[BaseException] = []

    def program() -> None:
        try:
            TritonModelService("ranker", args)
        except Exception as error:  # anything but InvalidInput is a defect, reported below
            outcome.append(error)

    recording, _ = run_program(program)
    if not outcome:
        documents = [d for d in (manifest(r) for r in recording) if d is not None]
        assert documents
        if not (VENDOR / "crds").is_dir():
            pytest.skip(f"vendored CRD schemas not found at {VENDOR}")
        for document in documents:
            if document["apiVersion"] in BUILT_IN:
                validate_k8s(document)
            else:
                validate_custom_resource(document, VENDOR)
        return
    error = outcome[0]
    assert isinstance(error, InvalidInput), f"{name}={value!r}: {type(error).__name__}: {error}"
    assert "\n" not in str(error), str(error)
    try:
        check_field_types(args)
    except InvalidInput:  # the wrong type: the error is about this field alone
        assert error.field == name, (name, value, str(error))
    else:  # a value of the right type may break a rule between fields (zones and min_replicas): one is named
        assert error.field.split(".")[0].split("[")[0] in FIELDS, (name, value, str(error))
    assert recording.resources == [], f"{name}={value!r} registered {len(recording.resources)} resources"
