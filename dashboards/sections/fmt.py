"""How numbers read on the page."""

from __future__ import annotations

import math


def usd(value: float | None) -> str:
    """Dollars: cents from $1 up, four significant digits below (a demo's $0.008046)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    return f"${value:.4g}"


def pct(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.{digits}f} %"


def interval(low: float, high: float) -> str:
    if math.isnan(low) or math.isnan(high):
        return "no interval (no data)"
    return f"95 % interval {pct(low)} – {pct(high)}"
