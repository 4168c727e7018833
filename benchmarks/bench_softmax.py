"""asv: the softmax family (softmax, log_softmax, logsumexp and both backward functions)."""

from .common import benchmark_classes, cold_start_seconds

globals().update(benchmark_classes("softmax", axes=(-1, 0)))


class ColdCompile:
    """A fresh process compiling softmax from an empty numba cache (import included)."""

    timeout = 600
    number = 1
    repeat = 1

    def track_cold_compile_seconds(self):
        return cold_start_seconds(
            "import numpy as np, jitloss; jitloss.softmax(np.ones((4, 8), np.float32))"
        )

    track_cold_compile_seconds.unit = "seconds"
