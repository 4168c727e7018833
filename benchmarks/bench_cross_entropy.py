"""asv: cross-entropy (loss, and loss with gradient), and its peak memory."""

import numpy as np

from .common import benchmark_classes, public

globals().update(benchmark_classes("cross_entropy"))


class CrossEntropyMemory:
    """Peak memory of cross_entropy_with_grad on a 256x128256 float32 input: with the
    gradient written over the logits (nothing of their size allocated) and without."""

    timeout = 300

    def setup(self):
        public("cross_entropy_with_grad")
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((256, 128256), dtype=np.float32)
        self.y = rng.integers(0, 128256, 256)
        w = np.zeros((4, 8), np.float32)
        from jitloss import cross_entropy_with_grad

        cross_entropy_with_grad(w, np.zeros(4, np.int64), grad_out=w)  # compile in setup
        cross_entropy_with_grad(w, np.zeros(4, np.int64))

    def peakmem_grad_out_in_place(self):
        from jitloss import cross_entropy_with_grad

        cross_entropy_with_grad(self.x, self.y, grad_out=self.x)

    def peakmem_new_gradient(self):
        from jitloss import cross_entropy_with_grad

        cross_entropy_with_grad(self.x, self.y)
