"""Range checks shared by the config dataclasses (the CLI's argparse types check the same)."""

from __future__ import annotations

import math
from numbers import Real

from labcore.cli import UserError


def integer(name: str, value, minimum: int = 1) -> None:
    """``value`` is an ``int`` (not a bool) and at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise UserError(f"{name} must be >= {minimum}, got {value}")


def real(name: str, value, *, low: float, high: float = math.inf, low_open=False, high_open=False):
    """``value`` is a finite real number in the interval given (open or closed ends)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise UserError(f"{name} must be in {interval}, got {value}")
