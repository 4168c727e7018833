"""``python -m jitloss demo``: train a two-layer MLP on scikit-learn's digits.

The network is plain NumPy; its loss and the gradient of the loss with respect to the
logits come from :func:`jitloss.cross_entropy_with_grad` (written over the logits in
place).  The same loss and gradient are also computed with a NumPy implementation on
every batch, to check that they agree and to compare the time spent in each.
"""

from __future__ import annotations

import time

import numpy as np

import jitloss


def numpy_cross_entropy_with_grad(logits, labels):
    """Mean cross-entropy and its gradient, the usual NumPy way (float32 in, float32 out)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    n = logits.shape[0]
    loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(n), labels]))
    grad = e / s
    grad[np.arange(n), labels] -= 1.0
    grad /= n
    return loss, grad


def run(epochs: int = 30, hidden: int = 128, batch: int = 32, lr: float = 0.1,
        seed: int = 0) -> dict:
    try:
        from sklearn.datasets import load_digits
        from tqdm import tqdm
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit(
            f"the demo needs scikit-learn and tqdm: pip install 'jitloss[demo]' ({exc})"
        ) from None

    t_start = time.perf_counter()
    x, y = load_digits(return_X_y=True)  # 1797 8x8 images shipped inside scikit-learn
    x = (x / 16.0).astype(np.float32)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_test = len(x) // 5
    test, train = order[:n_test], order[n_test:]
    w1 = (rng.standard_normal((64, hidden)) * np.sqrt(2 / 64)).astype(np.float32)
    b1 = np.zeros(hidden, np.float32)
    w2 = (rng.standard_normal((hidden, 10)) * np.sqrt(2 / hidden)).astype(np.float32)
    b2 = np.zeros(10, np.float32)
    velocity = [np.zeros_like(p) for p in (w1, b1, w2, b2)]
    warm = np.zeros((batch, 10), np.float32)  # load the compiled kernel before timing
    jitloss.cross_entropy_with_grad(warm, np.zeros(batch, np.int64), grad_out=warm)
    t_jit = t_numpy = 0.0
    worst_diff = 0.0

    for epoch in range(epochs):
        perm = rng.permutation(train)
        seen = correct = 0
        total = 0.0
        bar = tqdm(range(0, len(perm), batch), desc=f"epoch {epoch + 1:2d}/{epochs}",
                   leave=epoch == epochs - 1, ncols=88)
        for start in bar:
            idx = perm[start : start + batch]
            xb, yb = x[idx], y[idx]
            h = np.maximum(xb @ w1 + b1, 0.0)
            logits = h @ w2 + b2
            correct += int((logits.argmax(axis=1) == yb).sum())
            seen += len(idx)

            t0 = time.perf_counter()
            ref_loss, ref_grad = numpy_cross_entropy_with_grad(logits, yb)
            t_numpy += time.perf_counter() - t0
            t0 = time.perf_counter()
            loss, dlogits = jitloss.cross_entropy_with_grad(logits, yb, grad_out=logits)
            t_jit += time.perf_counter() - t0
            worst_diff = max(worst_diff, float(np.abs(dlogits - ref_grad).max()),
                             abs(float(loss) - ref_loss))

            total += float(loss) * len(idx)
            dw2 = h.T @ dlogits
            db2 = dlogits.sum(axis=0)
            dh = (dlogits @ w2.T) * (h > 0)
            dw1 = xb.T @ dh
            db1 = dh.sum(axis=0)
            for p, v, g in zip((w1, b1, w2, b2), velocity, (dw1, db1, dw2, db2)):
                v *= 0.9
                v -= lr * g
                p += v
            bar.set_postfix(loss=f"{total / seen:.4f}", acc=f"{correct / seen:.3f}")

    h = np.maximum(x[test] @ w1 + b1, 0.0)
    accuracy = float(((h @ w2 + b2).argmax(axis=1) == y[test]).mean())
    return {
        "accuracy": accuracy,
        "seconds": time.perf_counter() - t_start,
        "jitloss_seconds": t_jit,
        "numpy_seconds": t_numpy,
        "worst_difference": worst_diff,
        "test_samples": len(test),
    }


def main() -> int:
    r = run()
    print(f"test accuracy {r['accuracy']:.4f} on {r['test_samples']} held-out digits, "
          f"{r['seconds']:.1f} s in all")
    print(f"loss + gradient: jitloss {r['jitloss_seconds'] * 1e3:.1f} ms, NumPy "
          f"{r['numpy_seconds'] * 1e3:.1f} ms ({r['numpy_seconds'] / r['jitloss_seconds']:.1f}x); "
          f"largest difference {r['worst_difference']:.1e}")
    return 0 if r["accuracy"] >= 0.95 else 1
