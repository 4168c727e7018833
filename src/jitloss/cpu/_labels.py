"""Label checks for the CPU path, in one pass over the labels.

numba does not check bounds, so every label goes through :func:`scan` before a kernel
indexes with it; the public layer raises the error (``jitloss._args.label_error``).
"""

from __future__ import annotations

from numba import njit

# A label value no check lets through: the margin losses ignore none.
NO_IGNORE = -(2**62)


@njit(cache=True)
def scan(labels, classes, ignore, weight):
    """(first, denominator): the flat index of the first label outside [0, classes) that is
    not ``ignore`` (-1 if none), and the sum of weight[label] over the labels not ignored.
    """
    total = 0.0
    for i in range(labels.shape[0]):
        y = labels[i]
        if y == ignore:
            continue
        if y < 0 or y >= classes:
            return i, total
        total += weight[y]
    return -1, total
