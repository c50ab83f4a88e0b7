"""Which option chain the console shows: one currency and one expiry at a time, a window of
strikes around the forward.

:class:`ChainFocus` is plain state with moves (next or previous expiry, next currency, ``chain ETH
26DEC26``) checked against what :class:`~console.desk_state.DeskState` lists; the Console asks the
option BookKeepers for the focused expiry's live quotes. An expiry that left the list (the 08:00
rollover) gives way to the next one listed. :func:`strike_window` picks the strikes shown.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

from rich.console import RenderableType
from rich.text import Text

from console.desk_state import LIVE_QUOTE_MAX_AGE_S, DeskState
from console.views import chain_tables, expiry_label
from deribit.instruments import InstrumentNameError, currency_of, expiry_ms, parse_expiry
from messages.state import ChainSnapshot, ChainViewRequest, OptionQuote

#: How long a ``chain`` line that moved the focus waits for the keeper's live answer (a refresh
#: or two; the request also goes out at once).
LIVE_ANSWER_WAIT_S = 1.0


def expiry_ms_of(text: str) -> int:
    """``26DEC26`` -> its 08:00 UTC in ms. Raises ``InstrumentNameError`` (a ``ValueError``)."""
    return expiry_ms(parse_expiry(text))


@dataclass
class ChainFocus:
    """The focused chain: ``currency`` (one of ``currencies``), ``expiry_ms`` (None: the nearest
    listed) and ``strikes`` shown on each side of the forward. ``chosen``: the trader picked the
    currency (else it follows the traded future's)."""

    currencies: tuple[str, ...]
    strikes: int
    currency: str = ""
    expiry_ms: int | None = None
    chosen: bool = field(default=False)
    #: A ``chain`` line that moved the focus waits (until this clock time) for the keeper's live
    #: answer before it prints; None: nothing waits.
    pending_until: float | None = None

    def __post_init__(self) -> None:
        if not self.currencies:
            raise ValueError("a chain focus needs at least one currency")
        self.currency = self.currency or self.currencies[0]

    def expiry(self, desk: DeskState, now: float) -> int | None:
        """The expiry shown: the focused one while it is listed and not expired, else the next
        listed after it (the nearest when none was chosen); None when nothing is listed."""
        listed = _live(desk.option_expiries(self.currency), now)
        if not listed:
            return None
        if self.expiry_ms is None:
            return listed[0]
        at = bisect.bisect_left(listed, self.expiry_ms)
        return listed[at] if at < len(listed) else listed[-1]

    def next_expiry(self, desk: DeskState, now: float) -> int | None:
        return self._step(desk, now, 1)

    def previous_expiry(self, desk: DeskState, now: float) -> int | None:
        return self._step(desk, now, -1)

    def _step(self, desk: DeskState, now: float, by: int) -> int | None:
        """Move to the neighbouring listed expiry (staying at either end); the expiry now shown."""
        listed = _live(desk.option_expiries(self.currency), now)
        current = self.expiry(desk, now)
        if current is None:
            return None
        at = min(max(listed.index(current) + by, 0), len(listed) - 1)
        self.expiry_ms = listed[at]
        return self.expiry_ms

    def next_currency(self, desk: DeskState) -> str:
        """The next of the currencies that list options (round), at its nearest expiry."""
        with_options = [c for c in self.currencies if desk.option_expiries(c)] or list(self.currencies)
        at = with_options.index(self.currency) + 1 if self.currency in with_options else 0
        self.currency = with_options[at % len(with_options)]
        self.expiry_ms = None
        self.chosen = True
        return self.currency

    def follow(self, currency: str | None) -> None:
        """The traded future's currency, unless the trader chose the chain's."""
        if currency in self.currencies and not self.chosen and currency != self.currency:
            self.currency = currency
            self.expiry_ms = None

    def choose(self, currency: str | None, expiry: str | None, desk: DeskState, now: float) -> str | None:
        """``chain [CURRENCY] [EXPIRY]``: focus there; an error text (the focus unchanged), or None."""
        target = self.currency if currency is None else currency
        if target not in self.currencies:
            return f"{target} is not one of the desk's currencies ({', '.join(self.currencies)})"
        listed = _live(desk.option_expiries(target), now)
        if not listed:
            return f"no {target} options listed yet: the instrument list comes after the connection"
        chosen_ms: int | None = None
        if expiry is not None:
            try:
                chosen_ms = expiry_ms_of(expiry)
            except (InstrumentNameError, ValueError) as exc:
                return str(exc)
            if chosen_ms not in listed:
                return f"no {target} options expire on {expiry}; listed: {', '.join(expiry_label(e) for e in listed)}"
        if currency is not None:
            self.chosen = True
            if currency != self.currency:
                self.expiry_ms = None
        self.currency = target
        if chosen_ms is not None:
            self.expiry_ms = chosen_ms
        return None


def live_requests(desk: DeskState, focus: ChainFocus, option: str | None, now: float,
                  request_id: int) -> tuple[ChainViewRequest, ...]:
    """What the console asks the option BookKeepers for at each refresh: one request per
    currency that lists options, with the focused expiry (its currency's only) and the traded
    option and option positions of that currency. Nothing before the instrument lists came."""
    wanted = [name for name in (option, *desk.option_names()) if name]
    out = []
    for currency in focus.currencies:
        if not desk.option_expiries(currency):
            continue
        expiry = focus.expiry(desk, now) if currency == focus.currency else None
        names = tuple(dict.fromkeys(n for n in wanted if currency_of(n) == currency))
        out.append(ChainViewRequest(currency=currency, expiry_ms=expiry, names=names, request_id=request_id))
    return tuple(out)


def _live(expiries: tuple[int, ...], now: float) -> tuple[int, ...]:
    """The expiries still to come at ``now``."""
    return expiries[bisect.bisect_right(expiries, now * 1000):]


@dataclass(frozen=True)
class StrikeWindow:
    """The strikes shown (ascending), the forward they are centred on (None: no ticker yet,
    centred on the middle strike) and the strike nearest it (the ATM marker)."""

    strikes: tuple[float, ...]
    forward: float | None
    atm_strike: float | None


def strike_window(quotes: Iterable[OptionQuote], expiry_ms: int, each_side: int) -> StrikeWindow:
    """The strikes of ``expiry_ms`` among ``quotes``: the one nearest the forward (the options'
    median underlying price) and ``each_side`` on either side of it."""
    strikes: set[float] = set()
    forwards: list[float] = []
    for quote in quotes:
        if quote.expiry_ms != expiry_ms:
            continue
        strikes.add(quote.strike)
        forward = quote.underlying_price
        if forward is not None and math.isfinite(forward) and forward > 0:
            forwards.append(forward)
    ordered = sorted(strikes)
    if not ordered:
        return StrikeWindow((), None, None)
    forward = statistics.median(forwards) if forwards else None
    middle = (len(ordered) // 2 if forward is None
              else min(range(len(ordered)), key=lambda i: abs(ordered[i] - forward)))
    shown = tuple(ordered[max(0, middle - each_side):middle + each_side + 1])
    return StrikeWindow(shown, forward, ordered[middle] if forward is not None else None)


def focused_quotes(desk: DeskState, focus: ChainFocus, now: float) -> tuple[int | None, ChainSnapshot | None]:
    """The focused expiry and its options in the strike window: live (the keeper's answer at
    most :data:`~console.desk_state.LIVE_QUOTE_MAX_AGE_S` old), else the last minute's snapshot
    (a focus just moved: its live answer comes with the next refresh); None when neither has it."""
    expiry = focus.expiry(desk, now)
    if expiry is None:
        return None, None
    view = desk.views.get(focus.currency)
    chain: ChainSnapshot | None = None
    if view is not None and 0.0 <= now - view.at <= LIVE_QUOTE_MAX_AGE_S:
        quotes = [q for q in view.options if q.expiry_ms == expiry]
        if quotes:
            chain = ChainSnapshot(currency=view.currency, kind="option", at=view.at, index_price=view.index_price,
                                  options=tuple(quotes), price_currency=view.price_currency)
    if chain is None:
        minute = desk.chains.get((focus.currency, "option"))
        quotes = [q for q in minute.options if q.expiry_ms == expiry] if minute is not None else []
        if minute is None or not quotes:
            return expiry, None
        chain = ChainSnapshot(currency=minute.currency, kind="option", at=minute.at, index_price=minute.index_price,
                              options=tuple(quotes), price_currency=minute.price_currency)
    window = set(strike_window(chain.options, expiry, focus.strikes).strikes)
    return expiry, ChainSnapshot(currency=chain.currency, kind="option", at=chain.at, index_price=chain.index_price,
                                 options=tuple(q for q in chain.options if q.strike in window),
                                 price_currency=chain.price_currency)


def focus_is_live(desk: DeskState, focus: ChainFocus, now: float) -> bool:
    """Whether the keeper's live answer for the focused expiry is in (and fresh)."""
    expiry = focus.expiry(desk, now)
    view = desk.views.get(focus.currency)
    return (expiry is not None and view is not None and 0.0 <= now - view.at <= LIVE_QUOTE_MAX_AGE_S
            and any(q.expiry_ms == expiry for q in view.options))


def chain_due(desk: DeskState, focus: ChainFocus, now: float) -> RenderableType | None:
    """The chain a waiting ``chain`` line prints now: once its live answer is in, or (from the
    minute's snapshot, or saying so) once it waited long enough; None while it waits or when
    nothing waits."""
    if focus.pending_until is None or not (focus_is_live(desk, focus, now) or now >= focus.pending_until):
        return None
    focus.pending_until = None
    return focused_chain(desk, focus, now)


def focused_chain(desk: DeskState, focus: ChainFocus, now: float) -> RenderableType:
    """``chain``'s line-mode output: the focused expiry's strike window as a T-table."""
    expiry, chain = focused_quotes(desk, focus, now)
    if expiry is None:
        return Text(f"no {focus.currency} options listed yet")
    if chain is None:
        return Text(f"no quotes for {focus.currency} {expiry_label(expiry)} yet: the books answer within a second "
                    "(type chain again)")
    return chain_tables(chain, expiry_label(expiry))
