"""Triton python-backend model that serves a TorchScript ``model.pt`` from its own version folder.

Copied verbatim into every ``python``-target model as ``<model>/<version>/model.py``; it reads names,
types and batching from the model's config at load time, so one file serves every model.
It runs inside Triton's python-backend stub, never inside inferstack.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import triton_python_backend_utils as pb_utils

Array = npt.NDArray[Any]
TORCH_THREADS = "torch_threads"  # config parameter: torch intra-op threads of each instance


def torch_threads(config: dict[str, Any]) -> int:
    """The config's ``torch_threads``, else half the cores per instance (at least one).

    torch's default, one intra-op thread per core spinning between ops, competes with Triton's own
    threads and with every other instance: on 2 cores it cost 2.4x the CPU per request of 1 thread and
    served fewer requests (`inferstack bench`, README). The other half serves Triton and its queue.
    """
    given = config.get("parameters", {}).get(TORCH_THREADS, {}).get("string_value")
    if given:
        return int(given)
    instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
    return max(1, (os.cpu_count() or 1) // (2 * instances))


class TritonPythonModel:
    """Triton's python backend entry point: runs the repository's TorchScript ``model.pt``."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [
            (t["name"], pb_utils.triton_string_to_numpy(t["data_type"])) for t in config["output"]
        ]
        torch.set_num_threads(torch_threads(config))
        folder = Path(args["model_repository"]) / args["model_version"]
        self.module = torch.jit.load(str(folder / "model.pt"), map_location="cpu")  # type: ignore[no-untyped-call]
        self.module.eval()

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request, in order.

        With dynamic batching Triton hands over several requests at once: those whose non-batch
        shapes agree go through the model in one forward pass and are split back afterwards;
        requests of other lengths form their own groups (they cannot be concatenated).
        """
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple[Any, ...], list[tuple[int, list[Array]]]] = {}
        for index, request in enumerate(requests):
            arrays = [pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs]
            key = tuple(a.shape[1:] if self.batched else (index,) for a in arrays)
            groups.setdefault(key, []).append((index, arrays))
        errors = []
        for members in groups.values():
            try:
                for index, outputs in self._run(members):
                    tensors = [
                        pb_utils.Tensor(name, np.ascontiguousarray(value.astype(dtype, copy=False)))
                        for (name, dtype), value in zip(self.outputs, outputs, strict=True)
                    ]
                    responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            except Exception as error:  # a failing forward pass fails its requests, not the server
                errors.append(str(error))
                for index, _ in members:
                    responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error)))
        if len(errors) == len(groups):
            # Triton counts an error *response* as a successful request; only a raised error reaches
            # nv_inference_request_failure, which the failure alerts and canary checks read. When
            # some groups succeeded, raising would fail them too: those errors stay uncounted.
            raise pb_utils.TritonModelException(errors[0])
        return responses

    def _run(self, members: list[tuple[int, list[Array]]]) -> list[tuple[int, list[Array]]]:
        columns = list(zip(*(arrays for _, arrays in members), strict=True))
        tensors = [
            torch.from_numpy(np.concatenate(column) if self.batched else np.array(column[0]))
            for column in columns
        ]
        with torch.inference_mode():
            result = self.module(*tensors)
        outputs = [t.numpy() for t in (result if isinstance(result, tuple | list) else (result,))]
        if not self.batched:
            return [(members[0][0], outputs)]
        split, start = [], 0
        for index, arrays in members:
            size = arrays[0].shape[0]
            split.append((index, [o[start : start + size] for o in outputs]))
            start += size
        return split
