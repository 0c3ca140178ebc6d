"""Property-based: any single TritonModelServiceArgs value either builds a service whose manifests
validate, or is refused with one line naming the field, before anything is registered."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferstack.components.model_service import ModelSource, TritonModelService, TritonModelServiceArgs
from inferstack.infra.errors import InvalidInput
from inferstack.infra.fields import check_field_types
from tests.harness import any_value, run_catching
from tests.schemas import validate_recorded_manifests

BASE = TritonModelServiceArgs(
    models=["ranker"],
    source=ModelSource(role_arn="arn:aws:iam::123456789012:role/ranker", repository_uri="s3://models/ranker"),
    zones=3,
    cluster_has_crds=True,
)
FIELDS = [
    f.name
    for f in dataclasses.fields(TritonModelServiceArgs)
    if f.name
    not in ("source", "provider", "service_monitor_labels", "prometheus_server_address", "cluster_has_crds")
]
VALUES = any_value(
    "prod", "dev", "spot", "on-demand", "g5.xlarge", "p4d.24xlarge", "eu-west-1", "nvcr.io/x:1"
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(FIELDS), value=VALUES)
def test_a_value_builds_or_is_refused_in_one_line_naming_its_field(name: str, value: Any) -> None:
    args = dataclasses.replace(BASE, **{name: value})
    recording, error = run_catching(lambda: TritonModelService("ranker", args))
    if error is None:
        validate_recorded_manifests(recording)
        return
    assert isinstance(error, InvalidInput), f"{name}={value!r}: {type(error).__name__}: {error}"
    assert "\n" not in str(error), str(error)
    try:
        check_field_types(args)
    except InvalidInput:  # the wrong type: the error is about this field alone
        assert error.field == name, (name, value, str(error))
    else:  # a value of the right type may break a rule between fields (zones and min_replicas): one is named
        assert error.field.split(".")[0].split("[")[0] in FIELDS, (name, value, str(error))
    assert recording.resources == [], f"{name}={value!r} registered {len(recording.resources)} resources"
