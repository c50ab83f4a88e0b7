"""The console's trading language: one typed line in, one typed command or a reason out.

:func:`parse_line` reads the text alone (no market data) into a typed command, or a
:class:`ParseError` with the reason and a hint; it never raises, so a line that is not fully
understood sends nothing. What an order or cancel command becomes is :mod:`console.orders`'.

:data:`COMMANDS` describes every command once: the fixed words the parser reads, the words Tab
completes, :data:`HELP` and the README's table of console commands (:func:`commands_markdown`;
``python -m console.grammar`` prints it) are all built from it.

Order shortcuts: ``a`` buys, ``d`` sells; a second letter ``s`` means the bid, ``w`` the ask; the
amount is at most 10,000; one or three further words give a price (``18000s``: a stop's trigger)
or a ladder's bounds and count. Any other order-like or unknown line that ends in a lower-case
``c`` is refused (a guard against typos); a command with a value (FMZ-style words take theirs after
a colon: ``buyOption:price,amount``, ``setContractType:NAME``, ``setHedgeDeltaStep:x``; ``chain``,
``plot``, ``help`` after a space) is read first, so a bad value gets its real reason: what the
command accepts and what was typed.

Examples in the help name listed instruments (:func:`help_text` with :class:`Examples`, built
from the desk's instrument list); :data:`HELP` is the text before any is listed.
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

from config.settings import (
    MAX_DELTA_MISMATCH,
    MAX_SCENARIO_DAYS,
    MAX_SIZE_MULTIPLIER,
    MAX_SPOT_POINTS,
    MAX_VEGA_BAND_USD,
    MAX_VEGA_TENOR_DAYS,
    MAX_VOL_POINTS,
    MIN_VEGA_TENOR_DAYS,
    SPOT_MOVE_RANGE_PCT,
    VOL_SHIFT_RANGE,
    HedgerSettings,
    grid_points,
    scenario_range_refusal,
)
from deribit.instruments import InstrumentNameError, parse_expiry, parse_instrument_name
from desk.scenarios import Sticky
from messages.commands import Side
from messages.exposure import Greek
from messages.market import Instrument

#: The most a shortcut may type as its amount, before the size multiplier (the seed's limit).
MAX_QUANTITY = 10_000.0
#: Longest line the grammar reads; anything longer is a paste accident.
MAX_LINE = 200


# -- what a line can mean -----------------------------------------------------------------------
@dataclass(frozen=True)
class ParseError:
    """The line was not understood; nothing happens. ``reason`` says what is wrong, ``hint`` what
    to type instead."""

    line: str
    reason: str
    hint: str

    def __str__(self) -> str:
        return f"{self.reason}. {self.hint}" if self.hint else self.reason


@dataclass(frozen=True)
class MarketOrder:
    """``a200`` / ``d200``: marketable limit 0.1% through the touch."""

    side: Side
    quantity: float


@dataclass(frozen=True)
class TouchOrder:
    """``as200``, ``aw200``, ``ds200``, ``dw200``: at the bid or the ask; post-only when it joins
    its own side (buy at the bid, sell at the ask), marketable otherwise."""

    side: Side
    quantity: float
    touch: Literal["bid", "ask"]


@dataclass(frozen=True)
class LimitOrder:
    """``as100 16000``: post-only limit at an explicit price."""

    side: Side
    quantity: float
    price: float


@dataclass(frozen=True)
class StopOrder:
    """``dw200 18000s``: stop-market, triggered by the mark price, reduce only."""

    side: Side
    quantity: float
    trigger_price: float


@dataclass(frozen=True)
class LadderOrder:
    """``a100 16000 18000 10``: ``count`` post-only limits evenly spaced from ``low`` to ``high``.
    A buy ladder is typed from its low bound up, a sell ladder from its high bound down (the order
    its orders are placed in, ``d50 22000 20000 5``); ``reversed``: typed the other way round (a
    typo the console asks to confirm)."""

    side: Side
    quantity: float
    low: float
    high: float
    count: int
    reversed: bool = False


@dataclass(frozen=True)
class OptionOrder:
    """``buyOption:price,amount`` / ``sellOption:...`` on the contract set by setContractType."""

    side: Side
    price: float
    amount: float


@dataclass(frozen=True)
class Cancel:
    """``ca`` everything, ``cc`` the last manual order, ``cb``/``cs`` manual buys/sells (stops
    excluded), ``cstops`` manual stop orders."""

    scope: Literal["all", "last", "buys", "sells", "stops"]


Topic = Literal["price", "funds", "orders", "positions", "connection", "size_multiplier", "help", "status",
                "surface", "hedging"]


@dataclass(frozen=True)
class Show:
    """An information command: prints, sends nothing (``hedging`` asks the hedger for its status)."""

    topic: Topic


@dataclass(frozen=True)
class ShowChain:
    """``chain [CURRENCY] [EXPIRY]``: focus the option chain on a currency (``ETH``) and/or an
    expiry (``26DEC26``, upper case) and show it; nothing given: the focused chain (at first the
    nearest expiry). Whether they are listed is the console's to check, not the grammar's."""

    expiry: str | None = None
    currency: str | None = None


PlotWhat = Literal["smile", "term", "heatmap", "scenario"]
#: What ``plot`` draws, in the words the console reads (``heatmap``: the surface's grid;
#: ``scenario``: the book's scenario grid, see :class:`Scenario`).
PLOT_WHATS: tuple[PlotWhat, ...] = ("smile", "term", "heatmap", "scenario")


#: Other words for a kind of plot (the command line's ``--what surface`` is the heatmap).
_PLOT_ALIASES: dict[str, PlotWhat] = {"surface": "heatmap"}
_CURRENCY_WORD = re.compile(r"[A-Za-z]{3,5}", re.ASCII)


@dataclass(frozen=True)
class ShowRisk:
    """``risk [CURRENCY]``: the book's greeks per expiry and in total beside the exchange's
    account figures, of one currency (None: each of the desk's)."""

    currency: str | None = None


@dataclass(frozen=True)
class Scenario:
    """``scenario [SPOT] [VOL] [DAYS|expiry] [sticky-strike|sticky-moneyness] [CURRENCY]``: the
    book's PnL (USD) over underlying moves (percent) and vol shifts (vol points) after a time step.
    Each of them None: the ``[risk]`` settings' (``to_expiry``: the step runs to the next expiry);
    ``currency`` None: the chosen instrument's."""

    spot_moves_pct: tuple[float, ...] | None = None
    vol_shifts: tuple[float, ...] | None = None
    days: float | None = None
    to_expiry: bool = False
    sticky: Sticky | None = None
    currency: str | None = None


@dataclass(frozen=True)
class Plot:
    """``plot [smile|term|heatmap] [EXPIRY] [CURRENCY]``: a plot of the last recorded minute of
    ``currency`` (None: the chosen instrument's); a smile by default, ``expiry`` (as 26DEC26)
    narrows a smile to one expiry. ``plot scenario ...``: the scenario grid (``scenario``) drawn
    from the live book, not the database."""

    what: PlotWhat = "smile"
    expiry: str | None = None
    currency: str | None = None
    scenario: Scenario | None = None


@dataclass(frozen=True)
class HelpOn:
    """``help COMMAND``: the help of the commands ``typed`` names (keys of :data:`COMMANDS`)."""

    typed: tuple[str, ...]


@dataclass(frozen=True)
class ResetSizeMultiplier:
    """Ask for the size multiplier again."""


@dataclass(frozen=True)
class ChangeInstrument:
    """Choose the futures instrument again."""


@dataclass(frozen=True)
class Quit:
    """Stop the program cleanly."""


@dataclass(frozen=True)
class Hedging:
    """``activate delta hedging`` / ``activate delta hedging confirm`` (the plan the hedger
    stated) / ``deactivate delta hedging`` / ``ack`` (its alert)."""

    action: Literal["activate", "confirm", "deactivate", "acknowledge"]


@dataclass(frozen=True)
class Override:
    """``a200 override``: an order line sent although the instrument is the hedge instrument of
    an active hedger (refused without the word)."""

    order: OrderCommand


@dataclass(frozen=True)
class SetHedgeStep:
    """``setHedgeDeltaStep:x``: the hedger's band, in coins of delta."""

    max_delta_mismatch: float


@dataclass(frozen=True)
class VegaHedging:
    """``activate vega hedging`` / ``deactivate vega hedging`` / ``vega hedging status``."""

    action: Literal["activate", "deactivate", "status"]


@dataclass(frozen=True)
class SetVegaHedge:
    """``setVegaBand:2000`` (USD per vol point), ``setVegaBand:2000,30`` (and the hedge option's
    tenor in days), ``setVegaTenor:30`` (the tenor only: ``band_usd`` None keeps the band)."""

    band_usd: float | None
    tenor_days: float | None = None


@dataclass(frozen=True)
class SetContractType:
    """``setContractType:NAME``: the option that buyOption/sellOption trade."""

    instrument_name: str


@dataclass(frozen=True)
class SetTarget:
    """``target <delta|gamma|vega|theta> <amount> <currency> [<tenor>] [hold <greek>,...]``: plan
    options that take the currency's ``greek`` to ``amount`` (in the risk units: coin, USD per 1%
    move, USD per vol point, USD per day) near ``tenor_days`` (None: any expiry) while ``holds``
    stay where they are. Prints the plan; nothing is sent until ``confirm``."""

    greek: Greek
    amount: float
    currency: str
    tenor_days: float | None = None
    holds: tuple[Greek, ...] = ()


@dataclass(frozen=True)
class PlanAction:
    """``confirm [PLAN]`` (hand the plan shown to the Assistant; a plan number typed must be the
    shown plan's), ``cancel plan`` (stop working it and cancel its orders), ``plan`` (where it stands)."""

    action: Literal["confirm", "cancel", "show"]
    plan_id: int | None = None


OrderCommand = MarketOrder | TouchOrder | LimitOrder | StopOrder | LadderOrder | OptionOrder
Command = (OrderCommand | Override | Cancel | Show | ShowChain | Plot | HelpOn | ResetSizeMultiplier
           | ChangeInstrument | Quit | Hedging | SetHedgeStep | SetContractType | VegaHedging | SetVegaHedge
           | ShowRisk | Scenario | SetTarget | PlanAction)
ORDER_COMMANDS = (MarketOrder, TouchOrder, LimitOrder, StopOrder, LadderOrder, OptionOrder)
#: The last word of an order line that sends it although the console held it back: on the hedge
#: instrument of an active hedger, or when it looks like a typo (see :mod:`console.orders`).
OVERRIDE = "override"


# -- the commands, described once ------------------------------------------------------------------
Group = Literal["Trading", "Cancels", "Information", "Hedging", "Options", "Risk", "Exposure"]
#: Each group's heading in :data:`HELP`.
GROUP_TITLES: dict[Group, str] = {
    "Trading": "Trading (a buys, d sells; amount at most 10,000, times the size multiplier)",
    "Cancels": "Cancels (manual orders: the console's, labelled manual_api_<n>)",
    "Information": "Information (prints, sends nothing)",
    "Hedging": "Hedging (the hedger of the chosen instrument's currency)",
    "Options": "Options (the size multiplier does not apply)",
    "Risk": "Risk (the book's greeks and scenarios from live marks; prints, sends nothing)",
    "Exposure": "Exposure (a plan of option legs; nothing is sent until confirm)",
}


@dataclass(frozen=True)
class CommandHelp:
    """One line of the command list. ``words``: the fixed texts the parser reads as ``command``
    (word commands in any case, the cancel shortcuts only in lower case); ``completes``: what
    Tab offers besides them (a prefix that takes an argument); ``example``: a line to type
    (default: ``typed``'s first form), where ``{option}`` and ``{expiry}`` stand for a listed
    option and expiry (see :class:`Examples`)."""

    group: Group
    typed: str
    meaning: str
    words: tuple[str, ...] = ()
    command: Command | None = None
    completes: tuple[str, ...] = ()
    example: str = ""

    def example_line(self, examples: Examples) -> str:
        return (self.example or self.typed.split(" / ")[0]).format(option=examples.option, expiry=examples.expiry)


@dataclass(frozen=True)
class Examples:
    """What the help's examples name: a listed option and one of its expiries (as 26DEC26), or
    the placeholders :data:`NO_EXAMPLES` before the instruments are listed."""

    option: str
    expiry: str
    listed: bool = True


NO_EXAMPLES = Examples("OPTION", "EXPIRY", listed=False)


def _word(group: Group, typed: str, meaning: str, command: Command, *also: str) -> CommandHelp:
    return CommandHelp(group, typed, meaning, (typed, *also), command)


COMMANDS: tuple[CommandHelp, ...] = (
    CommandHelp("Trading", "a200 / d200", "limit 0.1% through the touch (ask x 1.001 / bid x 0.999), "
                                          "immediate-or-cancel"),
    CommandHelp("Trading", "as200 / dw200", "post-only limit at the bid (buy) / at the ask (sell)"),
    CommandHelp("Trading", "aw200 / ds200", "limit at the ask (buy) / at the bid (sell), immediate-or-cancel"),
    CommandHelp("Trading", "as100 16000", "post-only limit at 16000 (a price overrides s/w)"),
    CommandHelp("Trading", "dw200 18000s", "stop-market triggered by the mark at 18000, reduce only (not on the "
                                           "wrong side)"),
    CommandHelp("Trading", "a100 16000 18000 10", "a ladder of 10 post-only limits from 16000 to 18000 (a sell "
                                                  "ladder is typed from its high bound down: d100 18000 16000 10)"),
    CommandHelp("Trading", f"a200 {OVERRIDE}", "sends an order line held back: on the hedge instrument of an "
                                              "active hedger (it would trade it away), or one that looks like a "
                                              "typo (a post-only price through the market, a ladder's bounds "
                                              "reversed or on the wrong side of the market)"),
    CommandHelp("Trading", "a200c", "any other order line ending in c is never executed (a guard against typos)"),
    _word("Cancels", "ca", "cancels every order of the account", Cancel("all")),
    _word("Cancels", "cc", "cancels the last manual order", Cancel("last")),
    _word("Cancels", "cb", "cancels the manual buys (stops excluded)", Cancel("buys")),
    _word("Cancels", "cs", "cancels the manual sells (stops excluded)", Cancel("sells")),
    _word("Cancels", "cstops", "cancels the manual stop orders", Cancel("stops")),
    _word("Information", "price", "the touch of the chosen future and option", Show("price")),
    _word("Information", "funds", "equity, balance and margins per currency", Show("funds")),
    _word("Information", "orders", "the open orders", Show("orders")),
    _word("Information", "positions", "the positions with their greeks", Show("positions")),
    _word("Information", "connection status", "the link to the exchange", Show("connection")),
    _word("Information", "status", "positions, futures tickers, hedger, recorder and book sync", Show("status")),
    CommandHelp("Information", "chain [CURRENCY] [EXPIRY]", "the live option chain of one currency and expiry "
                "(the nearest at first) around the forward; the screen's chain pane follows it",
                ("chain",), ShowChain(), ("chain ",), example="chain {expiry}"),
    _word("Information", "surface", "the ATM term structure with 25-delta risk reversal and butterfly",
          Show("surface")),
    CommandHelp("Information", "plot [smile|term|heatmap] [EXPIRY]",
                "plots the chosen currency's last recorded minute (a smile by default, of one expiry if "
                "given) into a PNG under the data directory, and prints its name", ("plot",), Plot(),
                ("plot smile", "plot term", "plot heatmap"), example="plot smile {expiry}"),
    _word("Information", "show size multiplier", "the size multiplier", Show("size_multiplier")),
    _word("Information", "reset size multiplier", "asks for the size multiplier again", ResetSizeMultiplier()),
    _word("Information", "change instrument", "asks for the future to trade again", ChangeInstrument()),
    CommandHelp("Information", "help [COMMAND] / ?", "prints this list, or one command's help with an example",
                ("help", "?"), Show("help"), ("help ",), example="help chain"),
    CommandHelp("Information", "quit / exit / shutdown", "stops the program (so does Ctrl-D)",
                ("quit", "exit", "shutdown"), Quit()),
    _word("Hedging", "activate delta hedging", "switches the hedger on after stating its first order; a large "
                                               "first order or a position it did not make waits for confirm",
          Hedging("activate")),
    _word("Hedging", "activate delta hedging confirm", "confirms the plan the hedger stated (nothing is sent "
                                                       "until then)", Hedging("confirm")),
    _word("Hedging", "deactivate delta hedging", "switches the hedger off (and cancels a plan awaiting confirm)",
          Hedging("deactivate")),
    _word("Hedging", "ack", "acknowledges the red alert of a hedger that switched itself off", Hedging("acknowledge")),
    _word("Hedging", "delta hedging status", "the hedger's table and its answer", Show("hedging")),
    CommandHelp("Hedging", "setHedgeDeltaStep:0.01", "the hedger's band, in coins of delta",
                completes=("setHedgeDeltaStep:",)),
    _word("Hedging", "activate vega hedging", "keeps the currency's option vega within the vega band with one "
                                              "at-the-money option of the vega tenor (delta: the delta hedger)",
          VegaHedging("activate")),
    _word("Hedging", "deactivate vega hedging", "switches vega hedging off", VegaHedging("deactivate")),
    _word("Hedging", "vega hedging status", "the vega hedger's answer: vega, band, option, orders",
          VegaHedging("status")),
    CommandHelp("Hedging", "setVegaBand:2000 / setVegaBand:2000,30", "the vega band in USD per vol point (and the "
                "hedge option's tenor in days)", completes=("setVegaBand:",)),
    CommandHelp("Hedging", "setVegaTenor:30", "the vega hedge option's tenor in days (the listed expiry nearest "
                "it)", completes=("setVegaTenor:",)),
    CommandHelp("Options", "setContractType:NAME", "the option buyOption and sellOption trade (Tab completes "
                                                   "listed names)",
                completes=("setContractType:",), example="setContractType:{option}"),
    CommandHelp("Options", "buyOption:0.05,1 / sellOption:0.06,1",
                "GTC limit buy / sell of the chosen option; price and amount in coin",
                completes=("buyOption:", "sellOption:")),
    CommandHelp("Risk", "risk [CURRENCY]", "greeks per expiry and in total: delta plain and premium-adjusted "
                "(coin, USD), gamma USD per 1% move, vega USD per vol point and 30-day equivalent, theta USD per "
                "day, beside the exchange's account figures; positions left out named",
                ("risk",), ShowRisk(), ("risk ",), example="risk BTC"),
    CommandHelp("Risk", "scenario [SPOT] [VOL] [DAYS] [STICKY] [CURRENCY]",
                "PnL in USD of every position repriced, rows vol shifts (vol points), columns underlying moves "
                "(%); SPOT, VOL: LOW:HIGH:STEP or a comma list; DAYS: a number or expiry (the next one); STICKY: "
                "sticky-strike or sticky-moneyness; defaults in [risk] (-20:20:5 -20:20:5 1 sticky-moneyness)",
                ("scenario",), Scenario(), ("scenario ",), example="scenario -10:10:2 -5,0,5 expiry sticky-strike"),
    CommandHelp("Risk", "plot scenario [SPOT] [VOL] [DAYS] [STICKY]",
                "draws the scenario grid (PnL heatmap over move and vol shift, PnL against the move per vol "
                "shift) into a PNG under the data directory", completes=("plot scenario",),
                example="plot scenario -30:30:2 -20:20:5 expiry"),
    CommandHelp("Exposure", "target vega 5000 BTC [30d] [hold gamma,theta]",
                "plans options that take the currency's delta, gamma, vega or theta to the amount (coin, USD per "
                "1% move, USD per vol point, USD per day; may be negative) near the tenor, holding the greeks "
                "named; prints the legs, prices, cost and greeks before and after, and sends nothing",
                completes=("target ",), example="target vega 5000 BTC 30d hold gamma"),
    CommandHelp("Exposure", "confirm [PLAN]", "hands the plan shown (its number, if typed, must be the one shown) "
                "to the assistant, which works its legs with post-only limits; refused once the plan expired, "
                "or while the link is down or the portfolio unreconciled", ("confirm",), PlanAction("confirm"),
                ("confirm ",), example="confirm"),
    _word("Exposure", "cancel plan", "stops the plan being worked and cancels its orders", PlanAction("cancel")),
    _word("Exposure", "plan", "the plan being worked: each leg's progress and the greeks reached", PlanAction("show")),
)

_WORDS: dict[str, Command] = {word: c.command for c in COMMANDS if c.command is not None for word in c.words}
# The cancel shortcuts read as typed (lower case), like the order shortcuts.
_SHORTCUT_WORDS = frozenset(word for c in COMMANDS if c.group == "Cancels" for word in c.words)
_FMZ = ("setContractType", "buyOption", "sellOption", "setHedgeDeltaStep", "setVegaBand", "setVegaTenor")
_FMZ_NAMES = {name.lower(): name for name in _FMZ}

#: Everything the completer offers (words, and prefixes that take an argument).
COMPLETION_WORDS: tuple[str, ...] = (*_WORDS, *(word for c in COMMANDS for word in c.completes))


def _help(commands: Iterable[CommandHelp], examples: Examples) -> str:
    commands = tuple(commands)
    lines: list[str] = []
    for group, title in GROUP_TITLES.items():
        rows = [c for c in commands if c.group == group]
        width = max(len(c.typed) for c in rows) + 2
        lines.append(f"{title}:")
        for c in rows:
            example = c.example_line(examples)
            shown = f" (e.g. {example})" if c.example else ""
            lines.append(f"  {c.typed:<{width}}{c.meaning}{shown}")
    lines.append("help COMMAND shows one command with an example, e.g. help chain")
    if not examples.listed:
        lines.append(f"(examples name a listed option and expiry once the instrument list is in; until then "
                     f"{examples.option} and {examples.expiry} stand for them)")
    return "\n".join(lines)


def help_text(examples: Examples = NO_EXAMPLES) -> str:
    """The list of commands, the examples naming ``examples``' option and expiry."""
    return _help(COMMANDS, examples)


def command_help(typed: Iterable[str], examples: Examples = NO_EXAMPLES) -> str:
    """``help COMMAND``: each named command (a key of :data:`COMMANDS`) with its group, meaning and
    an example line."""
    by_typed = {c.typed: c for c in COMMANDS}
    lines = []
    for key in typed:
        c = by_typed[key]
        lines += [f"{c.typed}  ({c.group.lower()})", f"  {c.meaning}", f"  example: {c.example_line(examples)}"]
    return "\n".join(lines)


def commands_markdown(commands: Iterable[CommandHelp] = COMMANDS) -> str:
    """The README's table of console commands."""
    rows = ["| kind | line | what it does |", "|---|---|---|"]
    for c in commands:
        # A bar inside a table cell ends the cell unless escaped (plot [smile|term|heatmap]).
        typed = " / ".join(f"`{part}`" for part in c.typed.replace("|", "\\|").split(" / "))
        rows.append(f"| {c.group.lower()} | {typed} | {c.meaning} |")
    return "\n".join(rows)


#: The help before any instrument is listed (placeholders in the examples).
HELP = help_text()

# Numbers are ASCII digits only ([0-9], never \\d, which takes any script's digits, as Decimal does).
_NUMBER = r"(?:0|[1-9][0-9]{0,8})(?:\.[0-9]{1,8})?"
_NUMBER_RE = re.compile(_NUMBER, re.ASCII)
_SHORTCUT = re.compile(rf"(?P<side>[ad])(?P<touch>[sw]?)(?P<quantity>{_NUMBER})", re.ASCII)
_PRICE = re.compile(rf"(?P<price>{_NUMBER})(?P<stop>s?)", re.ASCII)
_COUNT = re.compile(r"[1-9][0-9]{0,3}", re.ASCII)
# What reads as an attempt at an order shortcut (so the error can say what is wrong with it).
_SHORTCUT_LIKE = re.compile(r"[ad](?:[a-z]?[-+0-9.,].*|[sw]?)", re.ASCII)
#: What a line may hold outside a plot command's arguments (file names may be in any script).
_ASCII_HINT = "retype it in ASCII: the digits 0-9, plain letters and spaces"


def _number(text: str) -> float | None:
    """A plain decimal in ASCII digits (no sign, exponent or separators), or None."""
    if not _NUMBER_RE.fullmatch(text):
        return None
    try:
        value = float(Decimal(text))
    except InvalidOperation:
        return None
    return value if math.isfinite(value) else None


def non_ascii(text: str) -> str | None:
    """What is wrong with the first character of ``text`` outside ASCII, or None when there is none.
    Numbers are read in the digits 0-9 only: another script's digit, a full-width or mathematical
    digit, or an invisible character beside a number must never change what an order means."""
    for position, char in enumerate(text, start=1):
        if not char.isascii():
            name = unicodedata.name(char, "unnamed character")
            what = "a digit outside 0-9" if char.isdigit() or char.isnumeric() else "not ASCII"
            return f"character {position}, {char!a} (U+{ord(char):04X} {name}), is {what}"
    return None


def parse_line(text: str) -> Command | ParseError | None:
    """What ``text`` asks for: a command, a :class:`ParseError`, or ``None`` for a blank line.
    Never raises."""
    if not isinstance(text, str):
        return ParseError(repr(text), "not text", "type a command; help lists them")
    line = text.strip()
    if not line:
        return None
    if len(line) > MAX_LINE:
        return ParseError(line[:40] + "...", f"line longer than {MAX_LINE} characters", "type one command per line")
    # The whole text, not the stripped line: strip() and split() take non-ASCII spaces too.
    foreign = non_ascii(text)
    if foreign is not None:
        return ParseError(line, f"{foreign}: commands and numbers are ASCII only", _ASCII_HINT)
    if not line.isprintable():
        return ParseError(line, "the line holds control characters", "retype it")
    words = " ".join(line.split())
    # Word commands read in any case; shortcuts (cancels as orders) only as typed, lower case.
    command = _WORDS.get(words if words.lower() in _SHORTCUT_WORDS else words.lower())
    if command is not None:
        return command
    # Commands that take a value read it first: a bad value gets its own reason, not the typo guard's.
    head, colon, rest = words.partition(":")
    if colon and " " not in head and head.lower() in _FMZ_NAMES:
        return _parse_fmz(line, head, rest.strip())
    first, _, args = words.partition(" ")
    if first.lower() == "chain":
        return _parse_chain(line, args)
    if first.lower() == "plot":
        return _parse_plot(line, args)
    if first.lower() == "risk":
        return _parse_risk(line, args)
    if first.lower() == "scenario":
        return _parse_scenario(line, args)
    if first.lower() == "help":
        return _parse_help(line, args)
    if first.lower() == "target":
        return _parse_target(line, args)
    if first.lower() == "confirm" and args:
        if not re.fullmatch(r"[1-9][0-9]{0,11}", args, re.ASCII):
            return _value_error(line, "confirm", "nothing or the number of the plan shown", args, "confirm 1796637175")
        return PlanAction("confirm", int(args))
    if line.endswith("c") and _would_run(line[:-1]):
        return _typo(line)
    if colon and " " not in head:
        return _unknown(line)
    if _SHORTCUT_LIKE.fullmatch(first):
        tokens = words.split(" ")
        if len(tokens) > 1 and tokens[-1] == OVERRIDE:
            if tokens[-2].endswith("c") and _would_run(" ".join([*tokens[:-2], tokens[-2][:-1]])):
                return _typo(line)
            order = _parse_order(line, tokens[:-1])
            return Override(order) if isinstance(order, ORDER_COMMANDS) else order
        return _parse_order(line, tokens)
    return _unknown(line)


def _would_run(text: str) -> bool:
    """Whether ``text`` is a command: a line that is one with a c appended is a typo; any other
    line ending in c gets the reason the line itself is not understood."""
    command = parse_line(text)
    return command is not None and not isinstance(command, ParseError)


def _typo(line: str) -> ParseError:
    return ParseError(line, "last letter is c: not executed (a guard against typos)",
                      "retype the line without the trailing c; cancels are ca, cc, cb, cs, cstops")


def _unknown(line: str) -> ParseError:
    typed = " ".join(line.split()).lower()
    guesses = difflib.get_close_matches(typed, list(_WORDS), n=3, cutoff=0.6)
    if guesses:
        # Near-equal guesses all named, in the command list's order ("activate hedging": delta, then vega).
        best = difflib.SequenceMatcher(None, typed, guesses[0]).ratio()
        close = [g for g in _WORDS if g in guesses and difflib.SequenceMatcher(None, typed, g).ratio() >= best - 0.05]
        said = " or ".join(repr(g) for g in close)
        return ParseError(line, f"unknown command {line!r}", f"did you mean {said}? help lists every command")
    if line[:1] in "AD" and line[1:2] in tuple("0123456789"):
        return ParseError(line, f"unknown command {line!r}", "order shortcuts are lower case: a200 buys, d200 sells")
    return ParseError(line, f"unknown command {line!r}", "help lists every command; a200 buys, d200 sells")


_CHAIN_HINT = "e.g. chain ETH 26DEC26, chain 26DEC26 (this currency), chain ETH (its nearest expiry) or chain"
_CHAIN_CURRENCY = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z]+)?", re.ASCII)


def _parse_chain(line: str, args: str) -> Command | ParseError:
    """``chain [CURRENCY] [EXPIRY]``: a currency is a word that starts with a letter, an expiry
    one that starts with a digit (DMMMYY)."""
    parts = args.upper().split()
    if len(parts) > 2:
        return ParseError(line, "chain takes at most a currency and an expiry", _CHAIN_HINT)
    currency = expiry = None
    if parts and not parts[0][:1].isdigit():
        currency = parts.pop(0)
        if not _CHAIN_CURRENCY.fullmatch(currency):
            return ParseError(line, f"{currency!r} is not a currency (BTC, ETH, SOL_USDC)", _CHAIN_HINT)
    if parts:
        expiry = parts.pop(0)
        try:
            parse_expiry(expiry)
        except InstrumentNameError as exc:
            return ParseError(line, str(exc), _CHAIN_HINT)
    if parts:
        return ParseError(line, "the currency comes before the expiry", _CHAIN_HINT)
    return ShowChain(expiry, currency)


_TARGET_HINT = "e.g. target vega 5000 BTC 30d, target gamma -20000 ETH, target vega 5000 BTC 30d hold gamma,theta"
_GREEK_WORDS = "delta, gamma, vega or theta"
_TENOR = re.compile(r"(?P<days>[1-9][0-9]{0,3})d", re.ASCII)


def _greek(word: str) -> Greek | None:
    return next((g for g in Greek if g.value == word.lower()), None)


def _parse_target(line: str, args: str) -> SetTarget | ParseError:
    """``target <greek> <amount> <currency> [<tenor>] [hold <greek>,...]``."""
    words = args.split()
    if len(words) < 3:
        return ParseError(line, "target needs a greek, an amount and a currency", _TARGET_HINT)
    greek = _greek(words[0])
    if greek is None:
        return _value_error(line, "target", f"a greek ({_GREEK_WORDS})", words[0], _TARGET_HINT[5:])
    typed = words[1]
    sign = -1.0 if typed.startswith("-") else 1.0
    magnitude = _number(typed[1:] if typed[:1] in "+-" else typed)
    if magnitude is None:
        why = _not_a_number(typed[1:] if typed[:1] in "+-" else typed)
        return _value_error(line, "target's amount", "a number (a leading - for a negative one)", typed,
                            _TARGET_HINT[5:], "" if why.startswith("no sign") else why)
    currency = words[2].upper()
    if not _CHAIN_CURRENCY.fullmatch(currency):
        return _value_error(line, "target's currency", "a currency (BTC, ETH)", words[2], _TARGET_HINT[5:])
    rest = words[3:]
    tenor: float | None = None
    if rest and rest[0].lower() != "hold":
        match = _TENOR.fullmatch(rest[0].lower())
        if match is None:
            return _value_error(line, "target's tenor", "a number of days from 1 to 9999 followed by d (30d)",
                                rest[0], _TARGET_HINT[5:])
        tenor = float(match["days"])
        rest = rest[1:]
    holds: tuple[Greek, ...] = ()
    if rest:
        if rest[0].lower() != "hold":
            return ParseError(line, f"after the currency and tenor only hold GREEKS may follow, got {' '.join(rest)!r}",
                              _TARGET_HINT)
        if len(rest) < 2:
            return ParseError(line, "hold needs the greeks to hold", "e.g. target vega 5000 BTC 30d hold gamma,theta")
        named = " ".join(rest[1:]).replace(",", " ").split()
        found = [_greek(w) for w in named]
        bad = [w for w, g in zip(named, found, strict=True) if g is None]
        if bad:
            return _value_error(line, "hold", f"greeks ({_GREEK_WORDS}) separated by commas", bad[0],
                                "target vega 5000 BTC 30d hold gamma,theta")
        holds = tuple(dict.fromkeys(g for g in found if g is not None))
        if greek in holds:
            return ParseError(line, f"target cannot hold {greek.value}, the greek it changes",
                              "hold the other greeks: target vega 5000 BTC 30d hold gamma,theta")
    return SetTarget(greek, sign * magnitude, currency, tenor, holds)


def _not_a_number(text: str) -> str:
    """Why ``text`` is not a plain decimal (see :func:`_number`), in a few words."""
    if not text:
        return "nothing was typed"
    if text[0] in "+-":
        return "no sign: the value is above 0 by itself"
    if any(c in text for c in ",_'"):
        return "no thousands separators"
    if "." in text and len(text.partition(".")[2]) > 8:
        return "at most 8 decimals"
    if re.fullmatch(r"[0-9.]+", text, re.ASCII) and len(text.partition(".")[0]) > 9:
        return "too large"
    return "digits 0-9 and one decimal point only"


def _value_error(line: str, what: str, accepted: str, typed: str, example: str, why: str = "") -> ParseError:
    """``WHAT needs ACCEPTED, got 'TYPED' (WHY)``: what a command takes, beside what it was given."""
    because = f" ({why})" if why else ""
    return ParseError(line, f"{what} needs {accepted}, got {typed!r}{because}", f"e.g. {example}")


_OPTION_EXAMPLE = "setContractType:BTC-26DEC26-100000-C (help setContractType names a listed one)"


def _parse_fmz(line: str, head: str, rest: str) -> Command | ParseError:
    name = _FMZ_NAMES[head.lower()]
    if name == "setContractType":
        candidate = rest.upper()
        accepted = "an option's name (CURRENCY-EXPIRY-STRIKE-C or -P)"
        try:
            parsed = parse_instrument_name(candidate)
        except InstrumentNameError as exc:
            return _value_error(line, name, accepted, rest, _OPTION_EXAMPLE, str(exc))
        if parsed.kind != "option":
            return _value_error(line, name, accepted, rest, _OPTION_EXAMPLE,
                                f"{candidate} is a {parsed.kind}; change instrument picks the future")
        return SetContractType(candidate)
    if name == "setHedgeDeltaStep":
        accepted = f"a number of coins of delta above 0 and at most {MAX_DELTA_MISMATCH:g}"
        value = _number(rest)
        if value is None:
            return _value_error(line, name, accepted, rest, "setHedgeDeltaStep:0.01", _not_a_number(rest))
        refusal = HedgerSettings.band_refusal(value)
        if refusal is not None:
            return _value_error(line, name, accepted, rest, "setHedgeDeltaStep:0.01",
                                "not above 0" if value <= 0 else f"above {MAX_DELTA_MISMATCH:g}")
        return SetHedgeStep(value)
    if name in ("setVegaBand", "setVegaTenor"):
        return _parse_vega(line, name, rest)
    side: Side = "buy" if name == "buyOption" else "sell"
    example = f"{name}:0.05,1"
    price_typed, comma, amount_typed = (part.strip() for part in rest.partition(","))
    if not comma:
        return _value_error(line, name, "a price and an amount separated by a comma (price in coin, amount in "
                                        "coins)", rest, example)
    price, amount = _number(price_typed), _number(amount_typed)
    if price is None or price <= 0:
        why = _not_a_number(price_typed) if price is None else "not above 0"
        return _value_error(line, f"{name}'s price", "a number in coin above 0", price_typed, example, why)
    if amount is None or amount <= 0:
        why = _not_a_number(amount_typed) if amount is None else "not above 0"
        return _value_error(line, f"{name}'s amount", f"a number of coins above 0 and at most {MAX_QUANTITY:,.0f}",
                            amount_typed, example, why)
    if amount > MAX_QUANTITY:
        return _value_error(line, f"{name}'s amount", f"a number of coins above 0 and at most {MAX_QUANTITY:,.0f}",
                            amount_typed, "split it into several orders")
    return OptionOrder(side, price, amount)


def _parse_vega(line: str, name: str, rest: str) -> SetVegaHedge | ParseError:
    """``setVegaBand:BAND[,TENOR]`` / ``setVegaTenor:TENOR`` (the ranges of hedger.vega_band_usd and
    hedger.vega_tenor_days)."""
    band_typed, comma, tenor_typed = (part.strip() for part in rest.partition(","))
    if name == "setVegaTenor":
        band_typed, comma, tenor_typed = "", ",", rest
    elif not comma:
        tenor_typed = ""
    band = tenor = None
    if name == "setVegaBand":
        accepted = f"USD per vol point above 0 and at most {MAX_VEGA_BAND_USD:,.0f}"
        band = _number(band_typed)
        if band is None or HedgerSettings.vega_band_refusal(band) is not None:
            why = _not_a_number(band_typed) if band is None else "not above 0" if band <= 0 else "too large"
            return _value_error(line, name, accepted, band_typed, "setVegaBand:2000", why)
    if comma:
        accepted = f"a tenor of {MIN_VEGA_TENOR_DAYS:g} to {MAX_VEGA_TENOR_DAYS:g} days"
        tenor = _number(tenor_typed)
        if tenor is None or HedgerSettings.vega_tenor_refusal(tenor) is not None:
            why = _not_a_number(tenor_typed) if tenor is None else "out of range"
            return _value_error(line, f"{name}'s tenor", accepted, tenor_typed,
                                "setVegaTenor:30" if name == "setVegaTenor" else "setVegaBand:2000,30", why)
    return SetVegaHedge(band, tenor)


def _parse_plot(line: str, args: str) -> Plot | ParseError:
    """``plot [smile|term|heatmap] [EXPIRY] [CURRENCY]``, the words in any order."""
    accepted = "at most one of smile, term, heatmap, one expiry (as 26DEC26) and one currency"
    what: PlotWhat | None = None
    expiry: str | None = None
    currency: str | None = None
    first, _, rest = args.partition(" ")
    if first.lower() == "scenario":
        scenario = _parse_scenario(line, rest, "plot scenario")
        return scenario if isinstance(scenario, ParseError) else Plot("scenario", scenario=scenario)
    if "scenario" in args.lower().split():
        return _value_error(line, "plot", accepted, args, "plot scenario -20:20:5 -10,0,10",
                            "the scenario's own words come after plot scenario")
    for word in args.split():
        lower = word.lower()
        kind = _PLOT_ALIASES.get(lower) or next((w for w in PLOT_WHATS if w == lower), None)
        if kind is not None and what is None:
            what = kind
            continue
        if _CURRENCY_WORD.fullmatch(word) and currency is None and kind is None:
            currency = word.upper()
            continue
        if kind is not None or word.startswith("-") or _CURRENCY_WORD.fullmatch(word):
            why = ("the console's plot takes words, not the command line's flags: the currency is the chosen "
                   "instrument's and the file is named for you") if word.startswith("-") else (
                "two kinds of plot" if kind is not None else "two currencies")
            return _value_error(line, "plot", accepted, args, "plot, plot term, plot smile 26DEC26", why)
        try:
            parse_expiry(word.upper())
        except InstrumentNameError as exc:
            return _value_error(line, "plot", accepted, args, "plot, plot term, plot smile 26DEC26", str(exc))
        if expiry is not None:
            return _value_error(line, "plot", accepted, args, "plot smile 26DEC26", "two expiries")
        expiry = word.upper()
    if expiry is not None and what not in (None, "smile"):
        return _value_error(line, "plot", accepted, args, "plot smile 26DEC26",
                            f"an expiry narrows a smile; {what} draws every expiry")
    return Plot(what or "smile", expiry, currency)


def _parse_help(line: str, args: str) -> HelpOn | Show | ParseError:
    """``help COMMAND``: the commands whose words or typed forms ``args`` names (a group's name
    names the group)."""
    wanted = " ".join(args.split()).lower().rstrip(":")
    if not wanted:
        return Show("help")

    def forms(c: CommandHelp) -> set[str]:
        typed = {part.split(" [")[0].split(":")[0].lower() for part in c.typed.split(" / ")}
        return typed | {w.lower() for w in c.words} | {w.strip().rstrip(":").lower() for w in c.completes}

    exact = tuple(c.typed for c in COMMANDS if wanted in forms(c))
    if exact:
        return HelpOn(exact)
    group = tuple(c.typed for c in COMMANDS if c.group.lower() == wanted or c.group.lower() == wanted + "s")
    if group:
        return HelpOn(group)
    starting = tuple(c.typed for c in COMMANDS if any(f.startswith(wanted) for f in forms(c)))
    if starting:
        return HelpOn(starting)
    every = sorted({f for c in COMMANDS for f in forms(c)})
    guess = difflib.get_close_matches(wanted, every, n=1, cutoff=0.6)
    hint = f"did you mean help {guess[0]}? help lists every command" if guess else "help lists every command"
    return ParseError(line, f"help knows no command {args.strip()!r}", hint)


_RISK_HINT = "e.g. risk, risk BTC"


def _parse_risk(line: str, args: str) -> ShowRisk | ParseError:
    """``risk [CURRENCY]``."""
    parts = args.split()
    if len(parts) > 1:
        return _value_error(line, "risk", "at most one currency", args, _RISK_HINT[5:], "more than one word")
    if parts and not _CURRENCY_WORD.fullmatch(parts[0]):
        return _value_error(line, "risk", "a currency (BTC, ETH)", args, _RISK_HINT[5:])
    return ShowRisk(parts[0].upper() if parts else None)


# A signed decimal in ASCII digits (no exponent, no separators): a scenario's move or shift.
_SIGNED = re.compile(r"[+-]?(?:0|[1-9][0-9]{0,5})(?:\.[0-9]{1,4})?", re.ASCII)
_NOT_NUMBERS = frozenset({"nan", "inf", "infinity", "+inf", "-inf", "-nan", "+nan"})
_STICKY_WORDS = {"sticky-strike": Sticky.STRIKE, "sticky-moneyness": Sticky.MONEYNESS, "strike": Sticky.STRIKE,
                 "moneyness": Sticky.MONEYNESS, "sticky_strike": Sticky.STRIKE,
                 "sticky_moneyness": Sticky.MONEYNESS}
_SCENARIO_EXAMPLE = "scenario -20:20:5 -10,0,10 1 sticky-strike BTC (SPOT in %, VOL in vol points, DAYS)"
#: What a scenario axis is called, its unit, its bounds and its most points.
_AXES = {"spot": ("the underlying's moves", "%", SPOT_MOVE_RANGE_PCT, MAX_SPOT_POINTS),
         "vol": ("the vol shifts", " vol points", VOL_SHIFT_RANGE, MAX_VOL_POINTS)}


def _signed(text: str) -> float | None:
    """A signed plain decimal (``-20``, ``+2.5``), or None."""
    if not _SIGNED.fullmatch(text):
        return None
    value = float(Decimal(text))
    return value if math.isfinite(value) else None


def _scenario_axis(line: str, axis: str, typed: str, command: str) -> tuple[float, ...] | ParseError:
    """``LOW:HIGH:STEP``, a comma list or one number, checked against the axis's bounds."""
    what, unit, bounds, most = _AXES[axis]
    accepted = (f"LOW:HIGH:STEP or a comma list of numbers from {bounds[0]:g} to {bounds[1]:g}{unit}, "
                f"at most {most} of them")
    example = f"{command} -20:20:5 -10,0,10" if axis == "spot" else f"{command} -20:20:5 -10:10:2"
    if typed.lower().strip("+-") in {w.strip("+-") for w in _NOT_NUMBERS}:
        return _value_error(line, what, accepted, typed, example, "not a number")
    if ":" in typed:
        parts = typed.split(":")
        if len(parts) != 3:
            return _value_error(line, what, accepted, typed, example, "a range is LOW:HIGH:STEP, three numbers")
        numbers = [_signed(p) for p in parts]
        bad = next((p for p, n in zip(parts, numbers, strict=True) if n is None), None)
        if bad is not None:
            return _value_error(line, what, accepted, typed, example,
                                f"{bad!r} is not a number (digits 0-9, a sign, at most 4 decimals)")
        low, high, step = (n for n in numbers if n is not None)
        if low > high:
            swapped = f"{high:g}:{low:g}:{abs(step):g}"
            fixed = f"{command} {swapped}" if axis == "spot" else f"{command} -20:20:5 {swapped}"
            return _value_error(line, what, accepted, typed, fixed,
                                f"the low bound {low:g} is above the high bound {high:g}")
        refusal = scenario_range_refusal(what, low, high, step, bounds, most)
        if refusal is not None:
            return _value_error(line, what, accepted, typed, example, refusal.partition(": ")[2])
        return grid_points(low, high, step)
    parts = typed.split(",")
    values = [_signed(p) for p in parts]
    bad = next((p for p, n in zip(parts, values, strict=True) if n is None), None)
    if bad is not None:
        return _value_error(line, what, accepted, typed, example,
                            f"{bad!r} is not a number (digits 0-9, a sign, at most 4 decimals)" if bad else
                            "an empty item in the list")
    points = tuple(sorted({v for v in values if v is not None}))
    if len(points) > most:
        return _value_error(line, what, accepted, typed, example, f"{len(points)} points")
    outside = [v for v in points if not bounds[0] <= v <= bounds[1]]
    if outside:
        return _value_error(line, what, accepted, typed, example, f"{outside[0]:g} is out of bounds")
    return points


def _parse_scenario(line: str, args: str, command: str = "scenario") -> Scenario | ParseError:
    """``scenario [SPOT] [VOL] [DAYS|expiry] [sticky-strike|sticky-moneyness] [CURRENCY]``: the
    numbers in that order (SPOT, then VOL, then DAYS); the words anywhere."""
    accepted = "SPOT and VOL (LOW:HIGH:STEP or a comma list), DAYS (a number or expiry), sticky-strike or " \
               "sticky-moneyness, a currency"
    spot: tuple[float, ...] | None = None
    vol: tuple[float, ...] | None = None
    days: float | None = None
    to_expiry = False
    sticky: Sticky | None = None
    currency: str | None = None
    numbers = 0
    for word in args.split():
        lower = word.lower()
        if lower in _STICKY_WORDS:
            if sticky is not None:
                return _value_error(line, command, accepted, args, _SCENARIO_EXAMPLE, "two sticky words")
            sticky = _STICKY_WORDS[lower]
            continue
        if lower in ("expiry", "expiries", "to-expiry"):
            if to_expiry or numbers >= 3:
                return _value_error(line, command, accepted, args, _SCENARIO_EXAMPLE, "two time steps")
            to_expiry = True
            numbers = max(numbers, 2)  # the step is given: no number after it
            continue
        if lower in _NOT_NUMBERS:
            return _value_error(line, command, accepted, args, _SCENARIO_EXAMPLE, f"{word!r} is not a number")
        if _CURRENCY_WORD.fullmatch(word) and not word.lower().startswith("sticky"):
            if currency is not None:
                return _value_error(line, command, accepted, args, _SCENARIO_EXAMPLE, "two currencies")
            currency = word.upper()
            continue
        if word[:1].isalpha() and not any(c in word for c in ":,"):  # a range or list: its own reason
            return _value_error(line, command, accepted, args, _SCENARIO_EXAMPLE,
                                f"{word!r} is none of sticky-strike, sticky-moneyness, expiry or a currency")
        if numbers == 0:
            axis = _scenario_axis(line, "spot", word, command)
            if isinstance(axis, ParseError):
                return axis
            spot, numbers = axis, 1
        elif numbers == 1:
            axis = _scenario_axis(line, "vol", word, command)
            if isinstance(axis, ParseError):
                return axis
            vol, numbers = axis, 2
        elif numbers == 2 and not to_expiry:
            value = _number(word)
            if value is None or value > MAX_SCENARIO_DAYS:
                why = _not_a_number(word) if value is None else f"above {MAX_SCENARIO_DAYS:g}"
                return _value_error(line, "the time step", f"a number of days from 0 to {MAX_SCENARIO_DAYS:g} "
                                    "or expiry (to the next expiry)", word, f"{command} -20:20:5 -10:10:5 1", why)
            days, numbers = value, 3
        else:
            return _value_error(line, command, accepted, args, _SCENARIO_EXAMPLE,
                                f"{word!r} after SPOT, VOL and DAYS: too many numbers")
    return Scenario(spot, vol, days, to_expiry, sticky, currency)


_AMOUNT = f"a number above 0 and at most {MAX_QUANTITY:,.0f}"


def _parse_order(line: str, tokens: list[str]) -> Command | ParseError:
    example = "e.g. a200, as200, as100 16000, dw200 18000s, a100 16000 18000 10"
    match = _SHORTCUT.fullmatch(tokens[0])
    if match is None:
        first = tokens[0]
        if len(first) == 1 or (len(first) == 2 and first[1] in "sw"):
            return ParseError(line, f"{first!r} needs an amount", example)
        if first[1].isalpha() and first[1] not in "sw":
            return ParseError(line, f"second letter {first[1]!r} must be s (bid) or w (ask), or the amount follows",
                              example)
        typed = first[2:] if first[1:2] in ("s", "w") else first[1:]
        return _value_error(line, "the amount", _AMOUNT, typed, example[5:], _not_a_number(typed))
    side: Side = "buy" if match["side"] == "a" else "sell"
    quantity = _number(match["quantity"])
    if quantity is None or quantity <= 0:
        return _value_error(line, "the amount", _AMOUNT, match["quantity"], example[5:], "not above 0")
    if quantity > MAX_QUANTITY:
        return _value_error(line, "the amount", _AMOUNT, match["quantity"], "split it into several orders",
                            f"above {MAX_QUANTITY:,.0f}")
    args = tokens[1:]
    if not args:
        if match["touch"]:
            return TouchOrder(side, quantity, "bid" if match["touch"] == "s" else "ask")
        return MarketOrder(side, quantity)
    if len(args) == 2:
        return ParseError(line, "a ladder needs a count after its two bounds", "e.g. a100 16000 18000 10")
    if len(args) > 3:
        return ParseError(line, "too many words", example)
    price_match = _PRICE.fullmatch(args[0])
    price = _number(price_match["price"]) if price_match else None
    if price_match is None or price is None or price <= 0:
        why = "not above 0" if price is not None else _not_a_number(args[0].removesuffix("s"))
        return _value_error(line, "the price", "a number above 0 (ending in s: a stop's trigger)", args[0],
                            "as100 16000 (limit) or dw200 18000s (stop)", why)
    if len(args) == 1:
        if price_match["stop"]:
            return StopOrder(side, quantity, price)
        return LimitOrder(side, quantity, price)
    if price_match["stop"]:
        return ParseError(line, "a ladder takes no stop (s) price", "e.g. a100 16000 18000 10")
    second = _number(args[1])
    if second is None or second <= 0:
        why = "not above 0" if second is not None else _not_a_number(args[1])
        return _value_error(line, "the ladder's second bound", "a number above 0", args[1],
                            "a100 16000 18000 10", why)
    if not _COUNT.fullmatch(args[2]):
        return _value_error(line, "the ladder's count", "a whole number of orders from 2 to 9999", args[2],
                            "a100 16000 18000 10")
    count = int(args[2])
    if count < 2:
        return _value_error(line, "the ladder's count", "a whole number of orders from 2 to 9999", args[2],
                            "as100 16000 for one order", "a ladder is 2 orders or more")
    low, high = min(price, second), max(price, second)
    if low == high:
        return ParseError(line, "the ladder's bounds are equal", "e.g. a100 16000 18000 10")
    return LadderOrder(side, quantity, low, high, count, reversed=(price > second) == (side == "buy"))


# -- the start-up prompts ----------------------------------------------------------------------------
def pick_future(text: str, futures: list[Instrument], default: Instrument | None = None) -> Instrument | ParseError:
    """The future a start-up answer names: its number in the listed order (from 1) or its name;
    an empty answer takes ``default`` when there is one."""
    choice = " ".join(str(text).split()).upper()
    names = [f.instrument_name for f in futures]
    listing = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    if not futures:
        return ParseError(choice, "no futures are listed yet", "wait for the instrument list")
    foreign = non_ascii(str(text))
    if foreign is not None:
        return ParseError(choice, f"{foreign}: a future is chosen by its number in 0-9 or its name",
                          f"type its number (1 to {len(futures)}) or its name: {listing}")
    if not choice and default is not None:
        return default
    if choice.isdigit() and 1 <= int(choice) <= len(futures):
        return futures[int(choice) - 1]
    for future in futures:
        if future.instrument_name == choice:
            return future
    return ParseError(choice, f"{choice or 'nothing'} is not a listed future",
                      f"type its number (1 to {len(futures)}) or its name: {listing}")


_MULTIPLIER_HINT = (f"give a number above 0 and at most {MAX_SIZE_MULTIPLIER:,.0f} in the digits 0-9 (no sign or "
                    "exponent), e.g. 10: then a2 trades 2 x 10")


def check_size_multiplier(value: float) -> float | ParseError:
    """``value`` if it may be the size multiplier: above 0 and at most :data:`MAX_SIZE_MULTIPLIER`
    (the range ``console.size_multiplier`` is declared with); NaN and infinity never are."""
    if 0 < value <= MAX_SIZE_MULTIPLIER:  # NaN compares false
        return float(value)
    where = f"above {MAX_SIZE_MULTIPLIER:,.0f}, the maximum" if value > MAX_SIZE_MULTIPLIER else "not above 0"
    return ParseError(f"{value:.12g}", f"size multiplier {value:.12g} is {where}", _MULTIPLIER_HINT)


def parse_size_multiplier(text: str) -> float | ParseError:
    """A size multiplier as typed (a plain decimal in ASCII digits), checked by :func:`check_size_multiplier`."""
    typed = str(text).strip()
    foreign = non_ascii(typed)
    if foreign is not None:
        return ParseError(typed, f"size multiplier {typed!r}: {foreign}", _MULTIPLIER_HINT)
    value = _number(typed)
    if value is None:
        return ParseError(typed, f"size multiplier {typed!r} is not a plain decimal number", _MULTIPLIER_HINT)
    checked = check_size_multiplier(value)
    return ParseError(typed, checked.reason, checked.hint) if isinstance(checked, ParseError) else checked


if __name__ == "__main__":
    print(commands_markdown())
