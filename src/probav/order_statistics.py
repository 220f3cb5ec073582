"""Exact order statistics, compiled: numpy's median, several times faster on large noisy arrays.

Registration takes a robust scale (a median and a median absolute deviation of about 13,000
residuals) at every Gauss–Newton iteration of every frame. ``np.median`` (introselect) and numba's
(quickselect) both mispredict about every other comparison on such data, about 130 µs a median here;
``median_inplace`` first narrows the values to a bracket around the middle ranks in branch-free
passes, about 35 µs, with the same value to the bit (the bracket is checked, never trusted).
"""
from __future__ import annotations

import numba
import numpy as np

_JIT = {"nogil": True, "cache": True}


@numba.njit(**_JIT)
def _select(values, n, k):
    """The k-th smallest of values[:n], reordering them (quickselect, median-of-three pivot)."""
    low, high = 0, n - 1
    while high > low:
        mid = (low + high) >> 1
        if values[mid] < values[low]:
            values[mid], values[low] = values[low], values[mid]
        if values[high] < values[low]:
            values[high], values[low] = values[low], values[high]
        if values[high] < values[mid]:
            values[high], values[mid] = values[mid], values[high]
        pivot = values[mid]
        i, j = low, high
        while i <= j:
            while values[i] < pivot:
                i += 1
            while pivot < values[j]:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if k <= j:
            high = j
        elif k >= i:
            low = i
        else:
            break
    return values[k]


@numba.njit(**_JIT)
def median_inplace(values, n, scratch):
    """numpy's median of values[:n] (the mean of the two middle values when n is even; NaN if any
    is NaN), reordering them; ``scratch``: room for n values.

    Quickselect alone mispredicts about every other comparison on noisy data. So while many values
    are left, the middle ranks are bracketed by two values of a sorted sample and one branch-free
    pass keeps only the values between them; quickselect finishes. Exact: a bracket that misses the
    middle ranks is not used."""
    for i in range(n):
        if values[i] != values[i]:
            return np.nan
    k = (n - 1) >> 1
    pair = 1 - (n & 1)  # even n: ranks k and k + 1 are both needed
    while n > 2048:
        m = 127
        step = n // m
        sample = np.sort(values[0:step * m:step])
        at = k * m // n
        lo, hi = sample[max(at - 12, 0)], sample[min(at + 12, m - 1)]  # ±12 ranks: about 2.5 sd
        below = kept = 0
        for i in range(n):
            v = values[i]
            below += v < lo
            scratch[kept] = v
            kept += (v >= lo) & (v <= hi)
        if kept == n or not (below <= k and k + pair < below + kept):
            break  # the bracket kept everything or missed the middle ranks: select among all
        values[:kept] = scratch[:kept]
        n, k = kept, k - below
    lower = _select(values, n, k)
    if not pair:
        return lower
    upper = values[k + 1]
    for i in range(k + 2, n):  # after the selection, the values above rank k are values[k + 1:n]
        upper = min(upper, values[i])
    return (lower + upper) / 2


def median(values) -> float:
    """``np.median(values)`` of a float64 array (all of it; NaN when it holds a NaN or nothing)."""
    values = np.array(values, np.float64).ravel()  # a copy: median_inplace reorders it
    if values.size == 0:
        return float("nan")
    return float(median_inplace(values, values.size, np.empty(values.size)))
