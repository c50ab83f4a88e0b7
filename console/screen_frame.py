"""What the full-screen console shows, as text: one :class:`ScreenFrame` of ANSI strings per
refresh, rendered by rich from the Console actor's :class:`~console.desk_state.DeskState` in the
actor's own thread (the terminal thread only draws the strings), and :class:`MessageLog`, the
messages pane's lines.

:func:`render_frame` is the one place that picks the pane renderers (``console.views`` today;
``console.tables`` once it lands) and the one place that sizes the panes (:func:`pane_heights`).
"""

from __future__ import annotations

import enum
import io
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from rich import box
from rich.console import Console as RichConsole
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from console.desk_state import DeskState
from console.views import (
    ALERT_STYLE,
    activation_text,
    alert_lines,
    chain_tables,
    expiry_label,
    fmt,
    hedger_table,
    orders_table,
    positions_table,
)
from messages.state import ChainSnapshot, OptionQuote

#: The screen's refresh rate (frames a second): the one place to point at a setting later.
SCREEN_HZ = 4.0
#: Lines the messages pane keeps (scrolled with PageUp/PageDown).
MESSAGE_LINES = 1000
#: The panes, top to bottom; each has a title bar on the screen but ``header``.
PANES = ("header", "positions", "hedger", "chain", "orders", "messages")


class FocusMove(enum.Enum):
    """The chain pane's keys: another expiry of the same currency, or the next currency."""

    PREVIOUS_EXPIRY = "previous expiry"
    NEXT_EXPIRY = "next expiry"
    NEXT_CURRENCY = "next currency"


@dataclass(frozen=True)
class ScreenFocus:
    """The chain pane's currency and expiry (ms; None: the nearest listed)."""

    currency: str
    expiry_ms: int | None = None

    def expiries(self, desk: DeskState, now: float) -> list[int]:
        """The listed option expiries of the currency not yet past, ascending."""
        return sorted({i.expiration_timestamp for i in desk.options(self.currency)
                       if i.expiration_timestamp > now * 1000})

    def resolved(self, desk: DeskState, now: float) -> int | None:
        """The expiry shown: the chosen one while listed, else the nearest."""
        listed = self.expiries(desk, now)
        if self.expiry_ms in listed:
            return self.expiry_ms
        return listed[0] if listed else None

    def moved(self, move: FocusMove, desk: DeskState, now: float) -> ScreenFocus:
        if move is FocusMove.NEXT_CURRENCY:
            currencies = desk.currencies
            if self.currency not in currencies:
                return ScreenFocus(currencies[0]) if currencies else self
            return ScreenFocus(currencies[(currencies.index(self.currency) + 1) % len(currencies)])
        listed = self.expiries(desk, now)
        current = self.resolved(desk, now)
        if current is None:
            return self
        step = 1 if move is FocusMove.NEXT_EXPIRY else -1
        return ScreenFocus(self.currency, listed[min(len(listed) - 1, max(0, listed.index(current) + step))])


@dataclass(frozen=True)
class ScreenFrame:
    """One refresh of the screen: each pane's text (ANSI, at the screen's width, at most its
    height), and the chain pane's title (currency, expiry, where the index is)."""

    header: str
    positions: str
    hedger: str
    chain: str
    orders: str
    chain_title: str
    width: int
    height: int
    #: Lines of each pane (:func:`pane_heights`), in :data:`PANES` order.
    heights: tuple[int, ...]

    def pane(self, name: str) -> str:
        return str(getattr(self, name))


# -- the panes' sizes ----------------------------------------------------------------------------------
#: Lines each pane gets at the least (title bars, the footer and the command line are extra).
_MIN_LINES = {"header": 3, "positions": 5, "hedger": 4, "chain": 7, "orders": 3, "messages": 3}
#: How the lines beyond the least are shared out (on 120x40: positions 7, chain 10, orders 4,
#: messages 4); messages take what rounding leaves.
_SHARE = {"positions": 3, "chain": 4, "orders": 1, "messages": 2}
#: Lines that are not a pane's: a title bar over each pane but the header, the footer, the command line.
FIXED_LINES = len(PANES) - 1 + 2


def pane_heights(height: int, currencies: int = 2) -> dict[str, int]:
    """Lines of each pane on a screen ``height`` lines tall (the least of each on a small one);
    the header has a line for the link and one per currency."""
    least = {**_MIN_LINES, "header": 1 + currencies}
    spare = max(0, height - FIXED_LINES - sum(least.values()))
    shares = sum(_SHARE.values())
    lines = {name: least[name] + spare * _SHARE.get(name, 0) // shares for name in PANES}
    lines["messages"] += spare - sum(spare * share // shares for share in _SHARE.values())
    return lines


# -- rendering ------------------------------------------------------------------------------------------
class Renderer:
    """rich at a given width, into ANSI text (one rich console, reused while the width holds)."""

    def __init__(self) -> None:
        self._console: RichConsole | None = None
        self._panes: dict[str, tuple[tuple[object, ...], str]] = {}

    def console(self, width: int) -> RichConsole:
        if self._console is None or self._console.width != width:
            self._console = RichConsole(file=io.StringIO(), width=width, force_terminal=True, color_system="256",
                                        markup=False, highlight=False, emoji=False, legacy_windows=False)
        return self._console

    def pane(self, name: str, key: tuple[object, ...], width: int, lines: int,
             make: Callable[[], RenderableType]) -> str:
        """The pane ``name``'s text, rendered again only when ``key`` (what it reads: immutable
        messages, compared by value), the width or the lines changed."""
        full = (key, width, lines)
        held = self._panes.get(name)
        if held is not None and held[0] == full:
            return held[1]
        text = self.text(make(), width, lines)
        self._panes[name] = (full, text)
        return text

    def text(self, renderable: RenderableType, width: int, lines: int) -> str:
        """``renderable`` in at most ``lines`` lines (the last says what was cut)."""
        console = self.console(width)
        with console.capture() as captured:
            console.print(renderable, crop=True, overflow="ellipsis", no_wrap=False)
        rendered = captured.get().rstrip("\n").split("\n")
        if len(rendered) > lines:
            rendered = [*rendered[:max(0, lines - 1)], f"\x1b[2m... {len(rendered) - lines + 1} more lines\x1b[0m"]
        return "\n".join(rendered)


def compact(renderable: RenderableType) -> RenderableType:
    """A table made for the line console, fitted to a pane: no title (the pane has one), no
    outer edge, the header underlined by one rule."""
    if isinstance(renderable, Table):
        renderable.title = None
        renderable.box = box.SIMPLE_HEAD
        renderable.show_edge = False
        renderable.padding = (0, 1)
    return renderable


def header_text(desk: DeskState, venue: str, now: float) -> RenderableType:
    """The header until console.tables' lands: venue, link and the age of the last data, the
    hedgers, and per currency the index, DVOL (or the desk's own 30-day index, so labelled) and
    the 30-day ATM vol."""
    status = desk.connection
    link = Text(f"{venue}  ", style="bold")
    if status is None:
        link.append("no link yet", style="bold red")
    else:
        link.append(f"{status.state.value}{', logged in' if status.authenticated else ''}"
                    f"{', trading allowed' if status.can_trade else ', NO TRADING'}"
                    f"{', attempt ' + str(status.attempt) if status.attempt > 1 else ''}",
                    style="green" if status.can_trade else "bold red")
    newest = max((t.at for t in desk.tops.values()), default=None)
    if newest is not None:
        # In whole seconds: a live link's header stays the same text (and is not redrawn).
        age = max(0.0, now - newest)
        link.append("  last frame <1 s ago" if age < 1 else f"  last frame {age:.0f} s ago",
                    style="bold yellow" if age > 5 else "dim")
    markets: list[Text] = []
    for currency in desk.currencies:
        surface = desk.surfaces.get(currency)
        dvol = desk.dvol.get(currency)
        market = Text(f"{currency} index {fmt(desk.index_price(currency), 2)}", style="bold")
        markets.append(market)
        if dvol is not None:
            market.append(f"  DVOL {fmt(dvol.volatility, 2)}", style="")
        elif surface is not None and surface.variance_index is not None:
            market.append(f"  DVOL n/a: desk's own 30d index {fmt(surface.variance_index, 2)}", style="yellow")
        if surface is not None:
            market.append(f"  30d variance index {fmt(surface.variance_index, 2)}  "
                          f"ATM 30d {fmt(surface.atm_iv_30d, 2)}", style="")
        hedger = desk.hedgers.get(currency)
        if hedger is not None:
            market.append(f"  hedger {activation_text(hedger)}" + (" ALERT" if hedger.alert else ""),
                          style=ALERT_STYLE if hedger.alert else "green" if hedger.active else "")
    return Text("\n").join([link, *markets])


def chain_quotes(desk: DeskState, focus: ScreenFocus, expiry_ms: int, now: float) -> tuple[list[OptionQuote], float]:
    """The focused expiry's quotes, live (the keepers' answers) where there are, else the last
    minute's; and the local time they are as of."""
    live = [held for held in desk.live_options.values() if held[0].expiry_ms == expiry_ms
            and held[0].instrument_name.startswith(focus.currency)]
    fresh = [quote for quote, _ in live if desk.option_quote(quote.instrument_name, now) is not None]
    if fresh:
        return fresh, max(at for _, at in live)
    chain = desk.chains.get((focus.currency, "option"))
    if chain is None:
        return [], now
    return [q for q in chain.options if q.expiry_ms == expiry_ms], chain.at


def strike_window(quotes: list[OptionQuote], around: float | None, rows: int) -> list[OptionQuote]:
    """The quotes of the ``rows`` strikes nearest ``around`` (the forward or index)."""
    strikes = sorted({q.strike for q in quotes})
    if around is not None and len(strikes) > rows:
        nearest = min(range(len(strikes)), key=lambda n: abs(strikes[n] - around))
        start = max(0, min(len(strikes) - rows, nearest - rows // 2))
        strikes = strikes[start:start + rows]
    else:
        strikes = strikes[:rows]
    kept = set(strikes)
    return [q for q in quotes if q.strike in kept]


def _forward(desk: DeskState, focus: ScreenFocus, quotes: list[OptionQuote]) -> float | None:
    return next((q.underlying_price for q in quotes if q.underlying_price), None) or desk.index_price(focus.currency)


def chain_pane_title(desk: DeskState, focus: ScreenFocus, expiry_ms: int | None, now: float) -> str:
    """``CHAIN BTC 26DEC26  forward 60,012.50  19.0 days``."""
    if expiry_ms is None:
        return f"CHAIN {focus.currency}"
    forward = _forward(desk, focus, chain_quotes(desk, focus, expiry_ms, now)[0])
    days = (expiry_ms / 1000 - now) / 86400
    return f"CHAIN {focus.currency} {expiry_label(expiry_ms)}  forward {fmt(forward, 2)}  {days:.1f} days"


def chain_pane(desk: DeskState, focus: ScreenFocus, rows: int, now: float) -> tuple[RenderableType, str]:
    """The chain pane and its title; until console.tables' chain table lands, views' T-table of
    the strikes around the forward."""
    expiry_ms = focus.resolved(desk, now)
    title = chain_pane_title(desk, focus, expiry_ms, now)
    if expiry_ms is None:
        return Text(f"no {focus.currency} options listed yet"), title
    quotes, at = chain_quotes(desk, focus, expiry_ms, now)
    forward = _forward(desk, focus, quotes)
    if not quotes:
        return Text(f"no quotes for {focus.currency} {expiry_label(expiry_ms)} yet"), title
    window = strike_window(quotes, forward, max(1, rows - 2))
    chain = ChainSnapshot(currency=focus.currency, kind="option", at=at, index_price=desk.index_price(focus.currency),
                          options=tuple(window))
    tables = chain_tables(chain)
    if hasattr(tables, "renderables"):  # views' Group: the table, then a footnote the pane has no room for
        tables = tables.renderables[0]
    return compact(tables), title


def render_frame(desk: DeskState, focus: ScreenFocus, venue: str, width: int, height: int, now: float,
                 renderer: Renderer) -> ScreenFrame:
    """Every pane but the messages at ``width``, each in its share of ``height`` (see
    :func:`pane_heights`). The one place that chooses the pane renderers."""
    lines = pane_heights(height, len(desk.currencies))
    portfolios = tuple(desk.portfolios.values())

    def hedger() -> RenderableType:
        return Group(*alert_lines(desk.alerts()), compact(hedger_table(desk.hedgers.values())))

    expiry = focus.resolved(desk, now)
    chain_title = chain_pane_title(desk, focus, expiry, now)
    # Each pane is rendered again only when what it shows changed (rich tables cost milliseconds
    # each, in the Console actor's thread, 4 times a second): its key is everything it reads.
    texts = {
        "header": renderer.text(header_text(desk, venue, now), width, lines["header"]),
        "positions": renderer.pane("positions", portfolios, width, lines["positions"],
                                   lambda: compact(positions_table(desk.positions()))),
        "hedger": renderer.pane("hedger", tuple(desk.hedgers.values()), width, lines["hedger"], hedger),
        "chain": renderer.pane("chain", (focus.currency, expiry, desk.chains.get((focus.currency, "option")),
                                         desk.views.get(focus.currency), int(now)),
                               width, lines["chain"], lambda: chain_pane(desk, focus, lines["chain"], now)[0]),
        "orders": renderer.pane("orders", portfolios, width, lines["orders"],
                                lambda: compact(orders_table(desk.open_orders()))),
    }
    return ScreenFrame(header=texts["header"], positions=texts["positions"], hedger=texts["hedger"],
                       chain=texts["chain"], orders=texts["orders"], chain_title=chain_title,
                       width=width, height=height, heights=tuple(lines[name] for name in PANES))


# -- the messages pane ------------------------------------------------------------------------------------
class MessageLog:
    """The messages pane's lines: what the console says (fills, answers, alerts, a command's
    tables), as the rich console wrote it (ANSI), newest last, at most :data:`MESSAGE_LINES`.
    Written from any thread (the actor's, the terminal's, a plot's), read by the screen's;
    ``seq`` counts the lines ever added, so a reader redraws only when it moved."""

    def __init__(self, keep: int = MESSAGE_LINES, on_line: Callable[[], None] | None = None) -> None:
        self._lines: deque[str] = deque(maxlen=keep)
        self._partial = ""
        self._lock = threading.Lock()
        self.seq = 0
        self.on_line = on_line

    def write(self, text: str) -> int:
        with self._lock:
            *complete, self._partial = (self._partial + text).split("\n")
            for line in complete:
                self._lines.append(line.rstrip("\r"))
            self.seq += len(complete)
        if complete and self.on_line is not None:
            self.on_line()
        return len(text)

    def lines(self) -> tuple[int, tuple[str, ...]]:
        """(seq, the lines kept)."""
        with self._lock:
            return self.seq, tuple(self._lines)
