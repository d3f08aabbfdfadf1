"""Numbers as people read them: 1234567 -> '1.23M', 3.0 -> '3', 0.123456 -> '0.1235'."""

from __future__ import annotations

import numpy as np


def count(n: int, noun: str) -> str:
    """'1 trial', '2 trials'."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def fmt(value) -> str:
    """Integers as integers, other numbers to 4 significant digits; anything else, strings that
    look like numbers included (trial ids such as '79885276'), as written."""
    if isinstance(value, (str, bytes, bool, np.bool_)) or value is None:
        return value.decode() if isinstance(value, bytes) else str(value)
    if isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def si(value) -> str:
    """Counts with a k/M/G suffix (params, FLOPs); 'none' for None, '?' for NaN or junk."""
    if value is None:
        return "none"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "?"
    if np.isnan(value):
        return "?"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"
