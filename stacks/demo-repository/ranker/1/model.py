"""A stand-in model: answers its input, so a fresh deploy has something to load and serve."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """The stand-in model the stacks ship: echoes its input as FP32."""

    def execute(self, requests):  # type: ignore[no-untyped-def]
        return [
            pb_utils.InferenceResponse(
                [
                    pb_utils.Tensor(
                        "OUTPUT__0",
                        pb_utils.get_input_tensor_by_name(r, "INPUT__0").as_numpy().astype(np.float32),
                    )
                ]
            )
            for r in requests
        ]
