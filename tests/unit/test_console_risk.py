"""The console's ``risk``, ``scenario`` and ``plot scenario`` (console/risk_view.py, console/grammar.py,
console/lines.py, the screen's F9 risk view): parsing with hostile input, the [risk] settings, the
tables from given CurrencyRisk / ScenarioGrid values, and the lines run against a DeskState whose
risk and scenario functions are simple fakes (desk/risk.py and desk/scenarios.py are tested on
their own; the e2e test runs the real ones)."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from rich.console import Console as RichConsole

import console.risk_view as risk_view
from config.settings import MAX_SPOT_POINTS, MAX_VOL_POINTS, RiskSettings, SettingsError, load_settings
from console.chain_focus import ChainFocus
from console.desk_state import DeskState
from console.grammar import COMMANDS, GROUP_TITLES, NO_EXAMPLES, ParseError, Plot, Scenario, ShowRisk, parse_line
from console.lines import LineRunner
from console.orders import OrderLimits, Trading
from console.screen_frame import FocusMove, Renderer, render_frame
from console.terminal import RunLine
from desk.risk import AccountCheck, CurrencyRisk, Exposure, OptionMark, RiskBucket
from desk.scenarios import ScenarioGrid, ScenarioSpec, Sticky
from messages.account import Position
from messages.market import IndexPrice
from messages.state import ChainView, OptionQuote, PortfolioChanged
from tests.support.market import NOW, PERP
from tests.support.settings import make_settings

OPTION = "BTC-24SEP21-40000-C"
EXPIRY_MS = 1632470400000


# -- parsing -----------------------------------------------------------------------------------------------
def test_risk_and_scenario_lines_parse() -> None:
    assert parse_line("risk") == ShowRisk()
    assert parse_line("RISK eth") == ShowRisk("ETH")
    assert parse_line("scenario") == Scenario()
    assert parse_line("scenario -20:20:10 -5,0,5 2.5 sticky-strike btc") == Scenario(
        (-20.0, -10.0, 0.0, 10.0, 20.0), (-5.0, 0.0, 5.0), 2.5, False, Sticky.STRIKE, "BTC")
    assert parse_line("scenario expiry") == Scenario(to_expiry=True)
    assert parse_line("scenario 5,-5,0,5 +2 expiry moneyness") == Scenario(
        (-5.0, 0.0, 5.0), (2.0,), None, True, Sticky.MONEYNESS)
    # A step that does not land on the high bound stops below it.
    assert parse_line("scenario -1:1:0.75") == Scenario((-1.0, -0.25, 0.5))
    assert parse_line("plot scenario -2:2:1 0 0 sticky-strike") == Plot(
        "scenario", scenario=Scenario((-2.0, -1.0, 0.0, 1.0, 2.0), (0.0,), 0.0, False, Sticky.STRIKE))
    assert parse_line("plot scenario") == Plot("scenario", scenario=Scenario())
    # The largest grid is accepted, one more point is not.
    largest = parse_line("scenario -50:50:1 -20:20:1")
    assert isinstance(largest, Scenario) and largest.spot_moves_pct is not None and largest.vol_shifts is not None
    assert (len(largest.spot_moves_pct), len(largest.vol_shifts)) == (MAX_SPOT_POINTS, MAX_VOL_POINTS)


@pytest.mark.parametrize(("line", "reason"), [
    ("scenario nan", "'nan' is not a number"),
    ("scenario NaN:1:1", "not a number"),
    ("scenario 0 inf", "not a number"),
    ("scenario -inf:0:1", "not a number"),
    ("scenario 0 0 nan", "'nan' is not a number"),
    ("scenario 1e3", "digits 0-9"),
    ("scenario -1e3:2:1", "'-1e3' is not a number"),
    ("scenario 20:-20:5", "the low bound 20 is above the high bound -20"),
    ("scenario -20:20:5 10:-10:1", "the low bound 10 is above the high bound -10"),
    ("scenario -20:20:0", "the step must be above 0, got 0"),
    ("scenario -20:20:-5", "the step must be above 0, got -5"),
    ("scenario -20:20", "a range is LOW:HIGH:STEP, three numbers"),
    ("scenario -20:20:5:1", "a range is LOW:HIGH:STEP, three numbers"),
    ("scenario -99999:99999:1", "bounds from -95 to 500"),
    ("scenario 0 -500,0", "-500 is out of bounds"),
    ("scenario 999999999999", "not a number"),
    ("scenario -20:20:0.01", f"at most {MAX_SPOT_POINTS} points, got 4001"),
    ("scenario 0 -21:21:1", f"at most {MAX_VOL_POINTS} points, got 43"),
    ("scenario 0,,1", "an empty item in the list"),
    ("scenario 0 0 3651", "above 3650"),
    ("scenario 0 0 -1", "no sign"),
    ("scenario 0 0 1 2", "too many numbers"),
    ("scenario 0 0 expiry 1", "too many numbers"),
    ("scenario 0 0 1 expiry", "two time steps"),
    ("scenario btc eth", "two currencies"),
    ("scenario sticky-strike strike", "two sticky words"),
    ("scenario sticky-delta", "none of sticky-strike, sticky-moneyness, expiry or a currency"),
    ("scenario 1_000", "not a number"),
    ("risk BTC ETH", "at most one currency"),
    ("risk 12", "a currency"),
    ("plot term scenario", "the scenario's own words come after plot scenario"),
    ("plot scenario 20:-20:5", "the low bound 20 is above the high bound -20"),
])
def test_hostile_scenario_and_risk_lines_are_refused_saying_what_to_type(line: str, reason: str) -> None:
    parsed = parse_line(line)
    assert isinstance(parsed, ParseError), (line, parsed)
    assert reason in str(parsed), str(parsed)
    assert "e.g." in parsed.hint and ("scenario" in parsed.hint or "risk" in parsed.hint), parsed.hint


@pytest.mark.parametrize("line", ["scenario \u0661\u0660", "scenario -20:20:\uff15", "scenario 0\u00a00",
                                  "scenario \U0001d7ce", "risk B\u0422C"])
def test_digits_and_spaces_outside_ascii_are_refused(line: str) -> None:
    parsed = parse_line(line)
    assert isinstance(parsed, ParseError) and "ASCII" in str(parsed), parsed


def test_the_risk_group_is_in_the_help_and_the_readme_words() -> None:
    assert "Risk" in GROUP_TITLES
    risk = [c for c in COMMANDS if c.group == "Risk"]
    assert [c.typed.split(" ")[0] for c in risk] == ["risk", "scenario", "plot"]
    for c in risk:  # each example parses into its command
        assert isinstance(parse_line(c.example_line(NO_EXAMPLES)), ShowRisk | Scenario | Plot), c


# -- settings ------------------------------------------------------------------------------------------------
def test_the_risk_settings_give_the_default_grid() -> None:
    risk = load_settings().risk
    assert risk.spot_moves_pct == (-20.0, -15.0, -10.0, -5.0, 0.0, 5.0, 10.0, 15.0, 20.0)
    assert risk.vol_shifts == risk.spot_moves_pct
    assert (risk.days, risk.days_to_expiry, risk.sticky) == (1.0, False, "moneyness")


@pytest.mark.parametrize(("key", "value", "says"), [
    ("risk.spot_low_pct", 30.0, "the low bound 30 is above the high bound 20"),
    ("risk.vol_step", 0.001, "at most 41 points"),
    ("risk.spot_high_pct", 1000.0, "bounds from -95 to 500"),
    ("risk.days", -1.0, "risk.days"),
    ("risk.sticky", "delta", "risk.sticky"),
])
def test_bad_risk_settings_are_refused(key: str, value: Any, says: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(says)):
        load_settings(overrides={key: value})


def test_a_scenario_line_takes_what_it_leaves_out_from_the_settings() -> None:
    risk = load_settings(overrides={"risk.days": 3.0, "risk.sticky": "strike"}).risk
    spec = risk_view.scenario_spec(Scenario(vol_shifts=(1.0,)), risk)
    assert spec == ScenarioSpec(risk.spot_moves_pct, (1.0,), 3.0, Sticky.STRIKE)
    assert risk_view.scenario_spec(Scenario(days=0.0, sticky=Sticky.MONEYNESS), risk).days == 0.0
    assert risk_view.scenario_spec(Scenario(to_expiry=True), risk).days is None
    to_expiry = RiskSettings(spot_low_pct=-1, spot_high_pct=1, spot_step_pct=1, vol_low=0, vol_high=0, vol_step=1,
                             days=1, days_to_expiry=True)
    assert risk_view.scenario_spec(Scenario(), to_expiry).days is None
    assert risk_view.scenario_spec(Scenario(days=2.0), to_expiry).days == 2.0


# -- the tables ---------------------------------------------------------------------------------------------
def exposure(delta: float) -> Exposure:
    """A position's figures scaled by ``delta`` (every figure distinct, to tell them apart)."""
    return Exposure(delta=delta, delta_pa=delta * 0.9, gamma=delta * 1e-5, gamma_usd_1pct=delta * 3000.0,
                    vega_usd=delta * 40.0, vega_30d_usd=delta * 55.0, theta_usd=-delta * 20.0, value_usd=delta * 900.0)


def a_risk(missing: tuple[str, ...] = ()) -> CurrencyRisk:
    options = exposure(0.5)
    future = Exposure(delta=-0.25, delta_pa=-0.25)
    return CurrencyRisk(
        currency="BTC", at=NOW, index_price=40000.0,
        buckets=(RiskBucket("24SEP21", EXPIRY_MS, options, 1), RiskBucket("PERPETUAL", None, future, 1)),
        options=options, total=options + future,
        account=(AccountCheck("delta_total", 0.2, 0.21), AccountCheck("options_gamma", 5e-6, None),
                 AccountCheck("options_vega", 20.0, 19.5)),
        missing=missing)


def text_of(renderable: Any, width: int = 160) -> str:
    out = RichConsole(file=io.StringIO(), width=width, markup=False, highlight=False, emoji=False)
    with out.capture() as captured:
        out.print(renderable)
    return captured.get()


def row(text: str, first: str) -> list[str]:
    return next(line.split() for line in text.splitlines() if line.split()[:1] == [first])


def test_the_risk_table_shows_each_bucket_the_totals_and_the_exchanges_figures() -> None:
    text = text_of(risk_view.risk_table(a_risk(missing=("BTC-24SEP21-50000-C (no live mark)",))))
    assert "BTC risk at 08:00:00 UTC, index 40,000" in text
    # delta coin, delta USD, PA coin, PA USD, gamma USD/1%, vega USD, vega 30d, theta USD/day
    assert row(text, "24SEP21") == ["24SEP21", "1", "0.5000", "20,000", "0.4500", "18,000", "1,500", "20.00", "27.50",
                                    "-10.00"]
    assert row(text, "PERPETUAL")[:6] == ["PERPETUAL", "1", "-0.2500", "-10,000", "-0.2500", "-10,000"]
    assert row(text, "options")[2:4] == ["0.5000", "20,000"]
    assert row(text, "total") == ["total", "2", "0.2500", "10,000", "0.2000", "8,000", "1,500", "20.00", "27.50",
                                  "-10.00"]
    assert row(text, "delta_total") == ["delta_total", "0.2000", "0.2100", "-0.0100", "-"]
    assert row(text, "options_gamma") == ["options_gamma", "0.000005", "-", "-", "-"]  # the exchange sent none
    assert row(text, "options_vega") == ["options_vega", "20.00", "19.50", "0.50", "-"]
    assert "left out of every figure: BTC-24SEP21-50000-C (no live mark)" in text


def test_agreement_with_the_exchange_is_said_when_a_tolerance_is_given() -> None:
    def check(agrees: bool | None, tolerance: float | None) -> str:
        fake = SimpleNamespace(agrees=agrees, tolerance=tolerance)  # an AccountCheck with desk/risk.py's tolerance
        return risk_view._agreement(fake, 4).plain  # type: ignore[arg-type]

    assert check(True, 0.002) == "yes, within 0.0020"
    assert check(False, 0.002) == "NO, not within 0.0020"
    assert check(None, 0.002) == check(True, None) == "-"
    assert risk_view._agreement(AccountCheck("options_delta", 1.0, 1.0), 4).plain == "-"  # no tolerance known


def grid(moves: tuple[float, ...] = (-10.0, 0.0, 10.0), shifts: tuple[float, ...] = (-5.0, 0.0, 5.0),
         days: float = 1.0, spec_days: float | None = 1.0) -> ScenarioGrid:
    pnl = tuple(tuple(100.0 * m + 10.0 * s - 1.0 for m in moves) for s in shifts)
    return ScenarioGrid(currency="BTC", at=NOW, spec=ScenarioSpec(moves, shifts, spec_days, Sticky.STRIKE),
                        days=days, pnl_usd=pnl, value_usd=1234.7, missing=("BTC-X (no live mark)",))


def test_the_scenario_table_rows_are_vol_shifts_and_columns_moves() -> None:
    text = text_of(risk_view.scenario_table(grid(), index=40000.0))
    assert "BTC scenario PnL in USD after 1 day, vols sticky strike; book value now 1,235 USD, index 40,000" in text
    assert row(text, "vol\\move") == ["vol\\move", "-10%", "+0%", "+10%"]
    assert row(text, "-5") == ["-5", "-1,051", "-51.00", "+949.00"]
    assert row(text, "+0") == ["+0", "-1,001", "-1.00", "+999.00"]
    assert row(text, "+5") == ["+5", "-951.00", "+49.00", "+1,049"]
    assert "left out: BTC-X (no live mark)" in text
    to_expiry = text_of(risk_view.scenario_table(grid(days=0.9239, spec_days=None)))
    assert "after 0.92 days (to the next expiry)" in to_expiry


def test_a_pnl_that_rounds_to_nothing_is_shown_as_zero() -> None:
    tiny = ScenarioGrid(currency="BTC", at=NOW, spec=ScenarioSpec((0.0, 1.0), (0.0,), 0.0), days=0.0,
                        pnl_usd=((-0.001, 0.004),), value_usd=-0.002)
    text = text_of(risk_view.scenario_table(tiny))
    assert row(text, "+0") == ["+0", "+0.00", "+0.00"] and "-0.00" not in text
    assert "worst +0.00 USD" in risk_view.scenario_summary(tiny)


def test_a_wide_scenario_grid_is_printed_in_parts_with_every_move() -> None:
    moves = tuple(float(m) for m in range(-30, 31, 2))
    text = text_of(risk_view.scenario_table(grid(moves=moves), columns=11), width=120)
    headers = [line for line in text.splitlines() if line.split()[:1] == ["vol\\move"]]
    assert len(headers) == 3
    shown = [cell for header in headers for cell in header.split()[1:]]
    assert shown == [f"{m:+g}%" for m in moves]
    assert max(len(line) for line in text.splitlines()[2:]) <= 120


def test_the_summary_names_the_worst_and_best_cell() -> None:
    summary = risk_view.scenario_summary(grid())
    assert "3 vol shifts x 3 moves after 1 day, sticky strike" in summary
    assert "worst -1,051 USD (move -10%, vol -5)" in summary and "best +1,049 USD (move +10%, vol +5)" in summary


# -- the lines, on a desk whose risk functions are fakes ---------------------------------------------------
def held_option(size: float = 0.5) -> Position:
    return Position(instrument_name=OPTION, kind="option", direction="buy", size=size, average_price=0.05,
                    mark_price=0.05, delta=0.3 * size)


def option_quote(at_mark: bool = True) -> OptionQuote:
    return OptionQuote(instrument_name=OPTION, expiry_ms=EXPIRY_MS, strike=40000.0, option_type="call", bid=0.049,
                       bid_amount=1.0, ask=0.051, ask_amount=1.0, mark_price=0.05, mark_iv=80.0 if at_mark else None,
                       underlying_price=32100.0, index_price=32000.0, open_interest=1.0, delta=0.3, gamma=None,
                       vega=None, theta=None, age_s=0.1, stale=False)


def fake_mark(quote: OptionQuote, _instrument: Any = None) -> OptionMark | None:
    if quote.mark_iv is None or not quote.underlying_price:
        return None
    return OptionMark(instrument_name=quote.instrument_name, expiry_ms=quote.expiry_ms, strike=quote.strike,
                      is_call=quote.option_type == "call", forward=quote.underlying_price, mark_iv=quote.mark_iv / 100)


def fake_risk(portfolio: PortfolioChanged, marks: Mapping[str, OptionMark], index_price: float | None,
              now: float) -> CurrencyRisk:
    """Each valued option: delta 0.3 a coin; the rest named as missing."""
    held = [p for p in portfolio.positions if p.size]
    valued = [p for p in held if p.instrument_name in marks]
    options = sum((exposure(0.3 * p.size) for p in valued), Exposure())
    return CurrencyRisk(currency=portfolio.currency, at=now, index_price=index_price,
                        buckets=(RiskBucket("24SEP21", EXPIRY_MS, options, len(valued)),) if valued else (),
                        options=options, total=options,
                        account=(AccountCheck("options_delta", options.delta, portfolio.options_delta),),
                        missing=tuple(f"{p.instrument_name} (no live mark)" for p in held if p not in valued))


def fake_grid(portfolio: PortfolioChanged, marks: Mapping[str, OptionMark], index_price: float, surface: Any,
              spec: ScenarioSpec, now: float) -> ScenarioGrid:
    """PnL = delta x move in USD (delta 0.3 a coin of each valued option)."""
    delta = sum(0.3 * p.size for p in portfolio.positions if p.instrument_name in marks)
    pnl = tuple(tuple(delta * index_price * m / 100 for m in spec.spot_moves_pct) for _ in spec.vol_shifts)
    days = spec.days if spec.days is not None else 2.0  # "the next expiry": two days away
    return ScenarioGrid(currency=portfolio.currency, at=now, spec=spec, days=days, pnl_usd=pnl, value_usd=800.0)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(risk_view, "mark_of", fake_mark)
    monkeypatch.setattr(risk_view, "currency_risk", fake_risk)
    monkeypatch.setattr(risk_view, "scenario_grid", fake_grid)


class Lines:
    """A LineRunner on a DeskState holding 0.5 of a call (and the index), its output in a string."""

    def __init__(self, tmp_path: Path, positions: tuple[Position, ...] = (held_option(),)) -> None:
        self.settings = make_settings({"console.instrument": PERP, "console.size_multiplier": 10.0},
                                      currencies=["BTC"], data_dir=str(tmp_path))
        self.desk = DeskState(["BTC"])
        self.desk.on_portfolio(PortfolioChanged(currency="BTC", at=NOW, positions=positions, open_orders=(),
                                                options_delta=0.16, reconciled=True))
        self.desk.on_index(IndexPrice(index_name="btc_usd", price=32000.0, timestamp=int(NOW * 1000)))
        self.now = NOW
        self.buffer = io.StringIO()
        self.out = RichConsole(file=self.buffer, width=160, markup=False, highlight=False, emoji=False)
        trading = Trading(OrderLimits(1e6, 3.0, 50.0, 20), key_prefix="console-t-", paper=False,
                          trading_allowed=True, origin="console")
        trading.instrument = PERP
        self.published: list[Any] = []
        self.runner = LineRunner(self.settings, self.desk, trading, origin="console",
                                 say=lambda m, style="": self.out.print(m), publish=self.published.append,
                                 log=structlog.get_logger(actor="test"), now=lambda: self.now, out=self.out)

    def quote_arrives(self, at_mark: bool = True) -> None:
        self.desk.on_chain_view(ChainView(currency="BTC", at=self.now, request_id=1, index_price=32000.0,
                                          options=(option_quote(at_mark),), expiries=(EXPIRY_MS,)))

    def run(self, line: str, wait: bool = True) -> Any:
        return self.runner.run(RunLine(line, wait=wait))

    def output(self) -> str:
        return self.buffer.getvalue()


@pytest.mark.usefixtures("fakes")
def test_a_piped_risk_line_waits_for_the_held_options_live_mark(tmp_path: Path) -> None:
    lines = Lines(tmp_path)
    outcome = lines.run("risk")
    assert outcome.wait_key is not None and not outcome.error
    assert lines.output() == ""  # nothing printed before the quote
    assert not lines.runner.wait_done(outcome.wait_key)
    lines.quote_arrives(at_mark=False)  # a quote without a mark IV yet is not a usable mark
    assert not lines.runner.wait_done(outcome.wait_key)
    lines.quote_arrives()
    assert lines.runner.wait_done(outcome.wait_key)
    text = lines.output()
    assert row(text, "24SEP21")[:4] == ["24SEP21", "1", "0.1500", "4,800"]  # 0.3 x 0.5, at the 32,000 index
    assert row(text, "options_delta") == ["options_delta", "0.1500", "0.1600", "-0.0100", "-"]
    assert "left out" not in text
    assert not lines.published  # risk sends nothing


@pytest.mark.usefixtures("fakes")
def test_a_piped_risk_line_prints_at_its_deadline_naming_what_was_left_out(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    lines = Lines(tmp_path)
    outcome = lines.run("risk BTC")
    assert outcome.wait_key is not None
    wait = lines.runner.waits[outcome.wait_key]
    monkeypatch.setattr(wait, "deadline", 0.0)
    assert lines.runner.wait_done(outcome.wait_key)
    text = lines.output()
    assert f"still waiting for a live mark of {OPTION}" in text
    assert f"left out of every figure: {OPTION} (no live mark)" in text


@pytest.mark.usefixtures("fakes")
def test_an_interactive_risk_line_prints_at_once_and_a_foreign_currency_is_refused(tmp_path: Path) -> None:
    lines = Lines(tmp_path)
    lines.quote_arrives()
    assert lines.run("risk", wait=True).wait_key is None  # the quote is live: no wait
    assert "BTC risk at" in lines.output()
    outcome = lines.run("risk ETH")
    assert outcome.error and "risk: ETH is not one of the desk's currencies (BTC)" in lines.output()


@pytest.mark.usefixtures("fakes")
def test_scenario_prints_the_grid_of_the_live_book(tmp_path: Path) -> None:
    lines = Lines(tmp_path)
    lines.quote_arrives()
    outcome = lines.run("scenario -10,0,10 0 expiry sticky-strike")
    assert outcome.wait_key is None and not outcome.error
    text = lines.output()
    assert "after 2 days (to the next expiry), vols sticky strike; book value now 800.00 USD" in text
    assert row(text, "+0") == ["+0", "-480.00", "+0.00", "+480.00"]  # 0.15 delta x 32,000 x 10%
    assert lines.run("scenario 0 0 0 ETH").error


@pytest.mark.usefixtures("fakes")
def test_scenario_without_positions_says_so(tmp_path: Path) -> None:
    lines = Lines(tmp_path, positions=())
    assert not lines.run("scenario").error
    assert "scenario: no BTC positions, nothing to reprice" in lines.output()


@pytest.mark.usefixtures("fakes")
def test_plot_scenario_writes_the_grid_and_starts_the_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[str, ...]] = []
    monkeypatch.setattr("console.lines.start_plot", lambda args, settings, out: started.append(args))
    lines = Lines(tmp_path)
    lines.quote_arrives()
    lines.run("plot scenario -10:10:5 -5,5 1")
    [args] = started
    grid_file, out = Path(args[args.index("--grid") + 1]), Path(args[args.index("--out") + 1])
    assert args[:2] == ("--what", "scenario") and grid_file.parent == out.parent == tmp_path / "plots"
    assert re.fullmatch(r"BTC-scenario-\d{8}-\d{6}\.json", grid_file.name) and out.suffix == ".png"
    from sql.scenario_plot import read_scenario_file
    written = read_scenario_file(grid_file)
    assert written.spot_moves_pct == (-10.0, -5.0, 0.0, 5.0, 10.0) and written.vol_shifts == (-5.0, 5.0)
    assert written.pnl_usd[0] == pytest.approx((-480.0, -240.0, 0.0, 240.0, 480.0))
    assert (written.currency, written.days, written.sticky, written.positions) == ("BTC", 1.0, "moneyness", 1)
    assert "worst -480.00 USD (move -10%" in lines.output() and str(out) in lines.output()


# -- the screen's risk view --------------------------------------------------------------------------------
@pytest.mark.usefixtures("fakes")
def test_f9_shows_the_focused_currencys_risk_in_the_chain_pane_and_back(tmp_path: Path) -> None:
    lines = Lines(tmp_path)
    lines.quote_arrives()
    focus = ChainFocus(("BTC",), strikes=5)
    renderer = Renderer()
    frame = render_frame(lines.desk, focus, "simulator", 120, 40, NOW, renderer)
    assert frame.chain_title.startswith("CHAIN BTC") and "gamma$/1%" not in frame.chain
    focus.toggle_view(risk=True)  # what F9 (FocusMove.RISK) does
    frame = render_frame(lines.desk, focus, "simulator", 120, 40, NOW, renderer)
    assert frame.chain_title.startswith("RISK BTC  index 32,000  (delta in coin")
    plain = re.sub(r"\x1b\[[0-9;]*m", "", frame.chain)
    assert "gamma$/1%" in plain and re.search(r"24SEP21\s+1\s+0\.1500\s+4,800", plain), plain
    assert max(len(line) for line in plain.splitlines()) <= 120
    focus.toggle_view()  # F8 from the risk view: the chain as it was
    assert not focus.risk and focus.view.value == "book"
    assert FocusMove.RISK.value == "risk"


def test_the_options_row_counts_options_not_a_dated_future_of_the_same_expiry() -> None:
    from desk.risk import currency_risk
    expiry_ms = int((NOW + 30 * 86_400) * 1000)
    when = risk_view.dt.datetime.fromtimestamp(expiry_ms / 1000, tz=risk_view.dt.UTC)
    stamp = f"{when.day}{when.strftime('%b').upper()}{when.strftime('%y')}"
    call, future = f"BTC-{stamp}-40000-C", f"BTC-{stamp}"
    mark = OptionMark(instrument_name=call, expiry_ms=expiry_ms, strike=40000.0, is_call=True, forward=40000.0,
                      mark_iv=0.6, mark_price=0.07, index_price=40000.0)
    portfolio = PortfolioChanged(currency="BTC", at=NOW, open_orders=(), reconciled=True, positions=(
        Position(instrument_name=call, kind="option", direction="buy", size=1.0),
        Position(instrument_name=future, kind="future", direction="buy", size=4000.0, mark_price=40000.0,
                 size_currency=0.1)))
    risk = currency_risk(portfolio, {call: mark}, 40000.0, NOW)
    assert not risk.missing and [b.positions for b in risk.buckets] == [2]
    text = text_of(risk_view.risk_table(risk))
    assert row(text, "options")[:2] == ["options", "1"]
    assert row(text, "total")[:2] == ["total", "2"]
