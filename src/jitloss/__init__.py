"""jitloss: JIT-compiled loss kernels (softmax family, cross-entropy, margin losses).

One public function per operation serves NumPy inputs on the CPU (numba ``njit``) and
CUDA arrays on the GPU (``numba.cuda``).
"""

from .cross_entropy import cross_entropy, cross_entropy_with_grad
from .softmax import log_softmax, log_softmax_backward, logsumexp, softmax, softmax_backward

__version__ = "0.1.0"

__all__ = [
    "cross_entropy",
    "cross_entropy_with_grad",
    "log_softmax",
    "log_softmax_backward",
    "logsumexp",
    "softmax",
    "softmax_backward",
]
