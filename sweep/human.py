"""Numbers as a person reads them: 2.44 M, 20.2k tokens/s, 1 min 52 s, 0.0003.

Used wherever a person reads a number (the report, the console's status line and summary, `plan`);
exact values stay in MLflow and Tune's JSON/CSV. Three significant figures are enough to compare
trials at a glance; nothing here ever prints an exponent like `2.442e+06`.
"""

from __future__ import annotations

import math
from typing import Any

DASH = "–"  # a value that was never reported


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _sig(x: float, digits: int = 3) -> str:
    """`x` to `digits` significant figures in plain positional notation (no exponent)."""
    if x == 0:
        return "0"
    decimals = digits - 1 - math.floor(math.log10(abs(x)))
    return f"{x:.{decimals}f}" if decimals >= 0 else f"{round(x, decimals):.0f}"


def count(n: Any) -> str:
    """Parameters, tokens, rows: 812 -> "812", 9_999 -> "9,999", 20_220 -> "20.2k", 2_442_000 -> "2.44 M", 1.3e9 -> "1.30 B"."""
    if not _finite(n):
        return DASH
    rounded = float(_sig(n)) if abs(n) >= 1e4 else n  # 999,999 is "1.00 M", not "1000k"
    for size, unit in ((1e9, " B"), (1e6, " M"), (1e3, "k")):
        if abs(rounded) >= max(size, 1e4):  # up to 9,999 exactly: "1,024 rows" reads fine
            return _sig(rounded / size) + unit
    return f"{n:,.0f}" if float(n).is_integer() or abs(n) >= 100 else _sig(n)


def rate(n: Any, unit: str) -> str:
    """A throughput: rate(20_220, "tokens/s") -> "20.2k tokens/s"."""
    return DASH if not _finite(n) else f"{count(n)} {unit}"


def duration(seconds: Any) -> str:
    """0.4 -> "0.4 s", 52 -> "52 s", 112 -> "1 min 52 s", 3720 -> "1 h 2 min"."""
    if not _finite(seconds):
        return DASH
    s = float(seconds)
    if s < 10:
        return f"{s:.1f} s"
    s = round(s)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def number(v: Any, digits: int = 3) -> str:
    """Any other measurement to `digits` significant figures: 0.0312 -> "0.0312", below 0.001
    as a short power of ten, 2.0e-5 -> "2e-5" (as learning rates are written), 1234.5 -> "1,234"."""
    if v is None:
        return DASH
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if not math.isfinite(v):
        return DASH
    if v != 0 and abs(v) < 1e-3:
        mantissa, exp = f"{v:.{digits - 1}e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    text = _sig(v, digits)
    return text.rstrip("0").rstrip(".") if "." in text else text


def loss(v: Any) -> str:
    """Losses keep four decimals: trials often differ in the third."""
    return f"{v:.4f}" if _finite(v) else DASH


def gigabytes(v: Any) -> str:
    return DASH if not _finite(v) else f"{_sig(v) if v < 100 else f'{v:,.0f}'} GB"
