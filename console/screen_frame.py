"""What the full-screen console shows, as text: one :class:`ScreenFrame` of ANSI strings per
refresh, rendered by rich from the Console actor's :class:`~console.desk_state.DeskState` in the
actor's own thread (the terminal thread only draws the strings), and :class:`MessageLog`, the
messages pane's lines.

:func:`render_frame` is the one place that picks the pane renderers (:mod:`console.tables`) and
the one place that sizes the panes (:func:`pane_heights`).
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

from console import tables
from console.chain_focus import ChainFocus
from console.desk_state import DeskState
from console.numbers import usd_text
from console.risk_view import held_options, risk_view

#: Lines the messages pane keeps (scrolled with PageUp/PageDown).
MESSAGE_LINES = 1000
#: The panes, top to bottom; each has a title bar on the screen but ``header``.
PANES = ("header", "positions", "hedger", "chain", "orders", "messages")


class FocusMove(enum.Enum):
    """The chain pane's keys: another expiry of the same currency, the next currency, the
    other columns (book or activity: greeks, open interest, 24 h volume), or the focused
    currency's risk instead of its chain."""

    PREVIOUS_EXPIRY = "previous expiry"
    NEXT_EXPIRY = "next expiry"
    NEXT_CURRENCY = "next currency"
    OTHER_COLUMNS = "other columns"
    RISK = "risk"


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
#: Lines each pane gets at the least (title bars, the footer and the command line are extra); the
#: orders pane's header and rule leave at least one order and the count of the others.
_MIN_LINES = {"header": 3, "positions": 5, "hedger": 4, "chain": 7, "orders": 4, "messages": 2}
#: How the lines beyond the least are shared out (on 120x40 with BTC and ETH: positions 7,
#: chain 10, orders 4, messages 5); messages take what rounding leaves.
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
    """A table (or the tables of a group) fitted to a pane: no title (the pane's bar has one), no
    outer edge, the header underlined by one rule."""
    for part in renderable.renderables if isinstance(renderable, Group) else [renderable]:
        if isinstance(part, Table):
            part.title = None
            part.box = box.SIMPLE_HEAD
            part.show_edge = False
    return renderable


def _chain(desk: DeskState, focus: ChainFocus, expiry_ms: int | None, lines: int, width: int,
           now: float) -> RenderableType:
    """The chain pane: the focused expiry's live strike window, as many strikes as the pane
    holds (its header and rule, a footer line for stale books), at most the focus's."""
    if expiry_ms is None:
        return Text(f"no {focus.currency} options listed yet")
    each_side = max(1, min(focus.strikes, (lines - 3) // 2))
    return tables.chain_table(desk, focus.currency, expiry_ms, each_side, now, width=width, titled=False,
                              view=focus.view)


def _risk(desk: DeskState, currency: str, now: float) -> RenderableType:
    """The chain pane's risk view (F9): the focused currency's :func:`~console.risk_view.risk_view`,
    its title on the pane's bar."""
    return risk_view(desk, (currency,), now, titled=False)


def render_frame(desk: DeskState, focus: ChainFocus, venue: str, width: int, height: int, now: float,
                 renderer: Renderer) -> ScreenFrame:
    """Every pane but the messages at ``width``, each in its share of ``height`` (see
    :func:`pane_heights`). The one place that chooses the pane renderers (console.tables)."""
    lines = pane_heights(height, len(desk.currencies))
    portfolios = tuple(desk.portfolios.values())
    second = int(now)  # ages are shown in whole seconds: a pane showing one is redrawn once a second
    index = tuple(sorted(desk.index.items()))
    expiry = focus.expiry(desk, now)
    chain_title = f"CHAIN {tables.chain_title(desk, focus.currency, expiry, now)}" if expiry is not None \
        else f"CHAIN {focus.currency}"
    if focus.risk:
        chain_title = (f"RISK {focus.currency}  index {usd_text(desk.index_price(focus.currency))}  (delta in coin, "
                       "$: USD; PA: premium-adjusted; vega per vol point)  F9: the chain")
        # The held options' quotes (not when each answer came: a pane redrawn 4 times a second for
        # nothing), with the second for their freshness.
        held = tuple(desk.live_options.get(name, (None,))[0] for name in held_options(desk, focus.currency))
        chain_key: tuple[object, ...] = ("risk", focus.currency, desk.portfolios.get(focus.currency), held,
                                         desk.index.get(focus.currency), second)
    else:
        chain_key = (focus.currency, expiry, focus.strikes, focus.view, desk.views.get(focus.currency), second)
    # Each pane is rendered again only when what it shows changed (rich tables cost milliseconds
    # each, in the Console actor's thread, several times a second): its key is everything it reads.
    texts = {
        "header": renderer.pane("header", (desk.connection, tuple(desk.dvol.values()), tuple(desk.surfaces.values()),
                                           tuple(desk.hedgers.values()), index, second),
                                width, lines["header"], lambda: tables.header_text(desk, venue, now)),
        "positions": renderer.pane("positions", (portfolios, index, second), width, lines["positions"],
                                   lambda: compact(tables.positions_table(desk, now))),
        "hedger": renderer.pane("hedger", (tuple(desk.hedgers.values()), second), width, lines["hedger"],
                                lambda: compact(tables.hedger_panel(desk, now))),
        "chain": renderer.pane("chain", chain_key, width, lines["chain"],
                               lambda: _risk(desk, focus.currency, now) if focus.risk
                               else _chain(desk, focus, expiry, lines["chain"], width, now)),
        "orders": renderer.pane("orders", (portfolios, second), width, lines["orders"],
                                lambda: compact(tables.orders_table(desk, now))),
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
