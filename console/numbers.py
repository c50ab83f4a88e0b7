"""How the console writes numbers: prices to their instrument's tick, amounts to their step, USD
and coin figures, IVs and greeks, each one way everywhere (tables, lines, the screen).

Every function takes ``None`` or a value that is not finite and writes ``-``.
"""

from __future__ import annotations

import math
from decimal import Decimal

MISSING = "-"


def _finite(value: float | None) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def decimals_of(step: float | None, most: int = 8) -> int:
    """The decimals a multiple of ``step`` needs: 0.0005 -> 4, 0.5 -> 1, 2.5 -> 1, 10 -> 0
    (``most`` at most; a missing or unusable step gives ``most``)."""
    step = _finite(step)
    if step is None or step <= 0:
        return most
    exponent = Decimal(repr(step)).normalize().as_tuple().exponent
    return max(0, min(most, -exponent if isinstance(exponent, int) else most))


def price_text(value: float | None, tick: float | None, most: int = 8) -> str:
    """A price to its instrument's tick's decimals, thousands separated: ``59,926.5``, ``0.0400``."""
    number = _finite(value)
    if number is None:
        return MISSING
    return f"{number:,.{decimals_of(tick, most)}f}"


def amount_text(value: float | None, step: float | None) -> str:
    """An amount (contracts, coins, USD of a future) to its minimum trade amount's decimals."""
    return price_text(value, step, most=6)


def usd_text(value: float | None, signed: bool = False) -> str:
    """USD: whole dollars from 1,000 up, cents below (``12,345``, ``-12.34``)."""
    number = _finite(value)
    if number is None:
        return MISSING
    sign = "+" if signed else ""
    return f"{number:{sign},.0f}" if abs(number) >= 1000 else f"{number:{sign},.2f}"


def coin_text(value: float | None, digits: int = 6, signed: bool = False) -> str:
    """A figure in the coin (PnL, value, delta): ``digits`` decimals."""
    number = _finite(value)
    if number is None:
        return MISSING
    sign = "+" if signed else ""
    text = f"{number:{sign},.{digits}f}"
    # A tiny figure rounds to zero: keep its sign off ("-0.000000" reads as a loss).
    return text.replace("-", "", 1) if float(text.replace(",", "")) == 0 and text.startswith("-") else text


def iv_text(value: float | None) -> str:
    """An implied vol in percent, as Deribit quotes it: one decimal (``65.3``)."""
    number = _finite(value)
    return MISSING if number is None else f"{number:.1f}"


def greek_text(value: float | None, digits: int = 4) -> str:
    number = _finite(value)
    if number is None:
        return MISSING
    text = f"{number:,.{digits}f}"
    return text.replace("-", "", 1) if float(text.replace(",", "")) == 0 and text.startswith("-") else text


def percent_text(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage (0.0123 -> ``1.23%``)."""
    number = _finite(value)
    return MISSING if number is None else f"{number * 100:.{digits}f}%"
