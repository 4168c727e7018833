"""asv: every public function on a CUDA device (skipped without one).

Inputs are numba device arrays; each timed call ends with a device synchronisation.
"""

import numpy as np

from .common import DTYPES, SHAPES, inputs, registered
from jitloss import _bench


def _device():
    try:
        from numba import cuda
    except ImportError:
        raise NotImplementedError("numba-cuda is not installed") from None
    if not cuda.is_available():
        raise NotImplementedError("no CUDA device")
    return cuda


class Cuda:
    """Each public function with device-array inputs (shapes and dtypes as on the CPU)."""

    params = [sorted(_bench.OPS), list(SHAPES), DTYPES]
    param_names = ["function", "shape", "dtype"]
    timeout = 240

    def setup(self, name, shape, dtype):
        cuda = _device()
        op = registered(name)
        dims = (op.shapes or SHAPES).get(shape)
        if dims is None:
            raise NotImplementedError(f"{name} is not benchmarked at {shape}")
        host = inputs(name, dims, dtype, -1)
        self.d = {k: cuda.to_device(v) if isinstance(v, np.ndarray) else v
                  for k, v in host.items()}
        self.op = op
        self.sync = cuda.synchronize
        self.op.run(self.d)
        self.sync()

    def time_cuda(self, *params):
        self.op.run(self.d)
        self.sync()
