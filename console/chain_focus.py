"""Which option chain the console shows: one currency and one expiry at a time, a window of
strikes around the forward.

:class:`ChainFocus` is plain state with moves (next or previous expiry, next currency, ``chain ETH
26DEC26``) checked against what :class:`~console.desk_state.DeskState` lists; the Console asks the
option BookKeepers for the focused expiry's live quotes. An expiry that left the list (the 08:00
rollover) gives way to the next one listed. console/tables.py draws the chain.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from rich.console import RenderableType
from rich.text import Text

from console.desk_state import LIVE_QUOTE_MAX_AGE_S, DeskState
from console.tables import ChainColumns, chain_table
from console.views import expiry_label
from deribit.instruments import InstrumentNameError, currency_of, expiry_ms, parse_expiry
from messages.state import ChainViewRequest

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
    #: Below the full width, the book or the activity (greeks, open interest, volume) of each option.
    view: ChainColumns = ChainColumns.BOOK
    #: The screen's chain pane shows the focused currency's risk (console/risk_view.py) instead.
    risk: bool = False

    def toggle_view(self, risk: bool = False) -> ChainColumns:
        """The other columns (``risk``: the risk view on or off); from the risk view, the other
        columns key brings the chain back as it was."""
        if risk:
            self.risk = not self.risk
        elif self.risk:
            self.risk = False
        else:
            self.view = ChainColumns.ACTIVITY if self.view is ChainColumns.BOOK else ChainColumns.BOOK
        return self.view

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
    """``chain``'s line-mode output: the focused expiry's live strike window (console/tables.py)."""
    expiry = focus.expiry(desk, now)
    if expiry is None:
        return Text(f"no {focus.currency} options listed yet")
    return chain_table(desk, focus.currency, expiry, focus.strikes, now, view=focus.view)
