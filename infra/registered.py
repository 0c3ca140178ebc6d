"""A resource as a program registers it: what the engine hands the policy pack, and what the offline
runner (``inferstack.stacks.offline``) records for the cost estimate and the policy check."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class RegisteredResource(Protocol):
    """One registered resource: its type, name, engine-form inputs and what it is ordered after."""

    @property
    def type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def urn(self) -> str: ...
    @property
    def parent_urn(self) -> str: ...
    @property
    def inputs(self) -> Mapping[str, Any]: ...
    @property
    def dependencies(self) -> Sequence[str]: ...
    @property
    def property_dependencies(self) -> Mapping[str, Sequence[str]]: ...
    @property
    def custom_timeouts(self) -> Mapping[str, float]: ...  # seconds by operation, as in the state
    @property
    def provider(self) -> str: ...  # "<provider urn>::<id>", empty for the default provider
