"""Standard input of the Console: a prompt_toolkit prompt on a terminal, the lines in order when
input is piped.

On a terminal: start-up progress, the questions for the future and the size multiplier, then the
full-screen desk (:mod:`console.screen`: panes above a command line) or, with ``--plain``
(``console.plain``), a prompt with lines from other actors printed above it; both with history (in
``data/``) and completion of commands and instrument names; Ctrl-C clears the line, Ctrl-D or
``quit`` stops the program. With piped
input each line runs in turn, an order line waiting for the exchange's answer and for its fills to
reach the portfolio; end of input after some lines stops the program, no input at all
(``/dev/null``) leaves it running without a console. A piped session ends with status 1 when a line
was refused, an order rejected or a line failed (the terminal counts them: it outlives the actor).

Both ways, start-up stops the program when the venue is not reached within the start-up timeout
(status 1, said once with what to check) or ``--instrument`` is not a listed future (status 2);
``quit``/``exit`` answer the start-up questions too.

The :class:`Terminal` thread knows the actor only by its reference and the requests below, so it
outlives the actor's restarts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol, TextIO, overload

import pykka
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from rich.console import Console as RichConsole
from rich.text import Text

from config.settings import Settings
from console.desk_state import Stage
from console.grammar import (
    COMPLETION_WORDS,
    ORDER_COMMANDS,
    OVERRIDE,
    ParseError,
    Quit,
    parse_line,
    parse_size_multiplier,
    pick_future,
)
from console.screen_frame import FocusMove, MessageLog, ScreenFrame
from console.views import startup_text
from messages.market import Instrument
from messages.system import ConnectionState, ConnectionStatus, ExitStatus

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.application import Application
    from prompt_toolkit.history import History

    from console.screen import DeskScreen

_REPO = Path(__file__).resolve().parent.parent
#: Messages of the full screen printed on the terminal when it closes.
LAST_MESSAGES_KEPT = 8
#: A level no log record reaches: none on a terminal the console's prompt or screen owns.
NO_LOG_RECORDS = logging.CRITICAL + 1
#: The Console actor's reference (console/ names no actor; any actor answering the requests below).
ConsoleRef = pykka.ActorRef[Any]


class Log(Protocol):
    """The part of a structlog logger the terminal uses."""

    def info(self, event: str, **kw: Any) -> Any: ...
    def warning(self, event: str, **kw: Any) -> Any: ...
    def exception(self, event: str, **kw: Any) -> Any: ...


# -- what the terminal asks of the Console actor ---------------------------------------------------
@dataclass(frozen=True)
class RunLine:
    """Execute one typed line; ``wait``: piped input, so register what the line must wait for."""

    text: str
    wait: bool = False


@dataclass(frozen=True)
class LineOutcome:
    """What became of a line: a piped line waits for ``wait_key``; ``follow_up`` asks again."""

    wait_key: str | None = None
    follow_up: Literal["instrument", "multiplier"] | None = None
    quit: bool = False
    error: bool = False


@dataclass(frozen=True)
class Configure:
    """The instrument and size multiplier chosen at start-up (either may stay as it is).
    ``restore``: the choice told again to a restarted actor, checked when it was made; the
    instrument is taken by its name before the actor has the instrument lists again."""

    instrument: str | None = None
    size_multiplier: float | None = None
    restore: bool = False


@dataclass(frozen=True)
class GetStartup:
    """Answered with the start-up stages."""


@dataclass(frozen=True)
class GetChoices:
    """Answered with :class:`Choices`: what the prompts offer."""


@dataclass(frozen=True)
class Choices:
    """What the prompts offer: the listed futures, the chosen currency's options, and the choice;
    ``default`` the future an empty answer takes (never an active hedger's, ``hedged``)."""

    futures: tuple[Instrument, ...]
    options: tuple[str, ...]
    instrument: str | None
    size_multiplier: float | None
    default: str | None = None
    hedged: tuple[str, ...] = ()

    def futures_listing(self, separator: str) -> str:
        """``futures: 1 BTC-PERPETUAL (hedger's)  2 BTC-24SEP21 ...; Enter: BTC-24SEP21``."""
        names = [f"{n + 1} {f.instrument_name}" + (" (hedger's)" if f.instrument_name in self.hedged else "")
                 for n, f in enumerate(self.futures)]
        return "futures: " + separator.join(names) + (f"; Enter: {self.default}" if self.default else "")


@dataclass(frozen=True)
class WaitDone:
    """Answered with True once the piped line ``key`` has all it waited for (or timed out)."""

    key: str


@dataclass(frozen=True)
class GetLink:
    """Answered with :class:`Link`."""


@dataclass(frozen=True)
class Link:
    """The link as the console knows it: the last status heard (None before any), and whether it is up."""

    status: ConnectionStatus | None
    up: bool


@dataclass(frozen=True)
class StopProgram:
    """Stop the program with ``status`` (piped input ended or said quit; the venue unreachable at
    start-up; an unlisted --instrument)."""

    reason: str
    status: ExitStatus = ExitStatus.OK


@dataclass(frozen=True)
class Say:
    """Print a line from the terminal thread through the actor's output (keeps ordering)."""

    text: str
    style: str = ""


@dataclass(frozen=True)
class GetScreenFrame:
    """Answered with a :class:`~console.screen_frame.ScreenFrame` for a screen of this size."""

    width: int
    height: int


@dataclass(frozen=True)
class MoveChainFocus:
    """The full screen's chain pane: another expiry or currency."""

    move: FocusMove


TerminalRequest = (RunLine | Configure | GetStartup | GetChoices | GetLink | WaitDone | StopProgram | Say
                   | GetScreenFrame | MoveChainFocus)


def isatty(stream: IO[str] | None) -> bool:
    """Whether ``stream`` is an open terminal (False for anything that cannot say)."""
    try:
        return bool(stream is not None and not stream.closed and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def completions(text: str, choices: Choices, asking_instrument: bool) -> list[str]:
    """What Tab offers for ``text``: the command words; option names after ``setContractType:``;
    expiries after ``chain``; future names while the instrument is asked for."""
    text = text.lstrip()
    candidates: list[str] = list(COMPLETION_WORDS)
    if text.lower().startswith("setcontracttype:"):
        prefix, rest = text[:16], text[16:].upper()
        candidates = [prefix + n for n in choices.options if n.startswith(rest)]
    elif text.lower().startswith("chain "):
        expiries = dict.fromkeys(n.split("-")[1] for n in choices.options)
        candidates = [f"chain {e}" for e in expiries]
    elif asking_instrument:
        candidates = [f.instrument_name for f in choices.futures]
    else:
        order, _, last = text.rpartition(" ")
        if order and OVERRIDE.startswith(last) and isinstance(parse_line(order), ORDER_COMMANDS):
            candidates.append(f"{order} {OVERRIDE}")
    return [word for word in candidates if word.lower().startswith(text.lower()) and word != text]


def _is_quit(answer: str) -> bool:
    """``quit`` (or ``exit``) typed where a question is asked: the program stops."""
    return isinstance(parse_line(answer), Quit)


class CompletionSource(Protocol):
    #: What the actor last said the prompts offer.
    choices: Choices
    asking_instrument: bool


class CommandCompleter(Completer):
    """prompt_toolkit's side of :func:`completions`, reading the choices from ``source``."""

    def __init__(self, source: CompletionSource) -> None:
        self.source = source

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        text = document.text_before_cursor.lstrip()
        for word in completions(text, self.source.choices, self.source.asking_instrument):
            yield Completion(word, start_position=-len(text))


def start_plot(args: tuple[str, ...], settings: Settings, out: RichConsole) -> None:
    """Run ``main.py plot ARGS`` (the plot command itself) in the background; print its output."""
    env = {**os.environ, "DESK__DATA_DIR": settings.data_dir}
    if settings.database.url:
        env["DATABASE_URL"] = settings.database.url
    command = [sys.executable, str(_REPO / "main.py"), "plot", *args]

    def run() -> None:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env,
                                  stdin=subprocess.DEVNULL, check=False)
            text = (done.stdout + done.stderr).strip() or f"plot finished (status {done.returncode})"
        except (OSError, subprocess.TimeoutExpired) as exc:
            text = f"plot failed: {exc}"
        out.print(Text(text))

    threading.Thread(target=run, name="console-plot", daemon=True).start()


# -- the terminal ---------------------------------------------------------------------------------------
class Screen:
    """Where the console's lines go on a terminal (its Rich consoles' file). While the full screen
    is up (``full_screen``), every line goes to its messages pane (:attr:`messages`), never to the
    terminal under it. In line mode, between prompts a line
    is written at once, so that what a line printed is on the screen before the next prompt is
    drawn (patch_stdout's proxy writes from a thread of its own and could draw it over the new
    prompt, which then stayed hidden); while a prompt is up, it goes through that proxy, above the
    prompt. A prompt starts under :attr:`lock`, released once it runs (``pre_run``), so a line is
    never written directly while a prompt is being drawn."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lock = threading.Lock()
        self.app: Application[str] | None = None
        self.messages = MessageLog()
        self.full_screen = False

    def _target(self) -> IO[str]:
        if self.full_screen:
            return self.messages  # type: ignore[return-value]
        app = self.app
        return sys.stdout if app is not None and app.is_running else self.stream

    def write(self, text: str) -> int:
        with self.lock:
            return self._target().write(text)

    def flush(self) -> None:
        with self.lock:
            if not self.full_screen:
                self._target().flush()

    def isatty(self) -> bool:
        return isatty(self.stream)

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", None) or "utf-8"


class Terminal:
    """Standard input's thread. It outlives a restart of its actor (re-attached by the new one,
    which is told the instrument and multiplier again), so no typed line is lost."""

    _running: dict[int, Terminal] = {}
    _lock = threading.Lock()

    def __init__(self, ref: ConsoleRef, stdin: TextIO, out: RichConsole, interactive: bool, settings: Settings,
                 log: Log) -> None:
        self.ref = ref
        self.stdin = stdin
        self.out = out
        self.interactive = interactive
        self.screen = Screen(out.file) if interactive else None
        self.show_on_screen(out)
        self.settings = settings
        self.cs = settings.console
        self.log = log
        self.stopped = threading.Event()
        self.attached = threading.Event()
        self.attached.set()
        self.instrument: str | None = None
        self.size_multiplier: float | None = None
        self.app: Application[Any] | None = None
        #: The full-screen desk (a terminal's default) rather than the line prompt (--plain).
        self.full_screen = self.screen is not None and not settings.console.plain and isatty(self.screen.stream)
        self.asking: Literal["instrument", "multiplier"] | None = None  # the full screen's question
        self.log_handlers: list[logging.Handler] = []  # those on the terminal (_quiet_logs)
        self.desk_screen: DeskScreen | None = None
        self.asking_instrument = False  # the completer offers futures while the instrument is asked
        self.choices = Choices((), (), None, None)
        # A piped session's lines refused by the console, rejected by the exchange or failed: any
        # makes its exit status 1. Kept here, where they outlive the actor's restarts.
        self.failures = 0
        self.failures_named: list[str] = []  # the first few, for the last line
        self._failures_lock = threading.Lock()
        self._link_was_up = False
        self.thread = threading.Thread(target=self._main, name="console-terminal", daemon=True)

    @classmethod
    def running_on(cls, stdin: TextIO) -> Terminal | None:
        """The terminal thread reading ``stdin``, if one is (a restarted actor finds its own)."""
        with cls._lock:
            running = cls._running.get(id(stdin))
        return running if running is not None and running.thread.is_alive() and not running.stopped.is_set() \
            else None

    @classmethod
    def attach_or_start(cls, ref: ConsoleRef, stdin: TextIO, out: RichConsole, interactive: bool,
                        settings: Settings, log: Log) -> Terminal:
        with cls._lock:
            running = cls._running.get(id(stdin))
            if running is not None and running.thread.is_alive() and not running.stopped.is_set():
                running.show_on_screen(out)
                running.attach(ref)
                return running
            terminal = cls(ref, stdin, out, interactive, settings, log)
            cls._running[id(stdin)] = terminal
        terminal.thread.start()
        return terminal

    def show_on_screen(self, out: RichConsole) -> None:
        """Make ``out`` (a new actor's) write through this terminal's :class:`Screen`."""
        if self.screen is not None:
            out.file = self.screen  # type: ignore[assignment]

    def attach(self, ref: ConsoleRef) -> None:
        # Told before the ref is published to this thread: the new actor is configured before it
        # handles any line the thread sends it.
        if self.instrument or self.size_multiplier:
            ref.tell(Configure(self.instrument, self.size_multiplier, restore=True))
        self.ref = ref
        self.attached.set()

    def close(self) -> None:
        self.stopped.set()
        self.attached.set()  # an ask waiting for a new actor gives up now (the screen's worker exits)
        with Terminal._lock:
            if Terminal._running.get(id(self.stdin)) is self:
                del Terminal._running[id(self.stdin)]
        app = self.app
        if app is not None and app.is_running and app.loop is not None:
            with contextlib.suppress(RuntimeError):
                app.loop.call_soon_threadsafe(lambda: app.exit(exception=EOFError()) if app.is_running else None)
        if threading.current_thread() is not self.thread and self.interactive:
            # Give prompt_toolkit the moment it needs to put the terminal back in cooked mode.
            self.thread.join(timeout=1.0)

    # -- asking the actor, across its restarts ----------------------------------------------------------
    @overload
    def ask(self, message: GetStartup, timeout: float = ...) -> tuple[Stage, ...]: ...
    @overload
    def ask(self, message: GetChoices, timeout: float = ...) -> Choices: ...
    @overload
    def ask(self, message: RunLine, timeout: float = ...) -> LineOutcome: ...
    @overload
    def ask(self, message: WaitDone, timeout: float = ...) -> bool: ...
    @overload
    def ask(self, message: Configure, timeout: float = ...) -> str | None: ...
    @overload
    def ask(self, message: GetLink, timeout: float = ...) -> Link: ...
    @overload
    def ask(self, message: Say | StopProgram | MoveChainFocus, timeout: float = ...) -> None: ...
    @overload
    def ask(self, message: GetScreenFrame, timeout: float = ...) -> ScreenFrame: ...

    def ask(self, message: TerminalRequest, timeout: float = 30.0) -> object:
        while not self.stopped.is_set():
            ref = self.ref
            try:
                return ref.ask(message, timeout=timeout)
            except pykka.ActorDeadError:
                if self.ref is not ref:
                    continue
                self.attached.clear()
                # attach() sets the ref before the event: a new ref seen here was attached
                # between the two checks, and one attached after them sets the event again.
                if self.ref is ref and not self.attached.wait(timeout=15.0):
                    raise
        raise pykka.ActorDeadError("console stopped")

    def say(self, text: str, style: str = "") -> None:
        self.out.print(Text(text, style=style))

    @overload
    def ask_for_line(self, message: RunLine, line: str) -> LineOutcome | None: ...
    @overload
    def ask_for_line(self, message: WaitDone, line: str) -> bool | None: ...

    def ask_for_line(self, message: RunLine | WaitDone, line: str) -> object:
        """:meth:`ask` for one line's sake: a failure (a bug, an actor too busy to answer) is logged
        and said, naming the line, and gives None; the terminal goes on with the next line. Only
        the actor's end (ActorDeadError) ends the terminal."""
        try:
            return self.ask(message)
        except pykka.ActorDeadError:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.log.exception("console_line_failed", line=line.strip()[:200], error=error)
            with contextlib.suppress(Exception):
                self.say(f"error while handling {line.strip()[:200]!r}: {error}; see the log", "bold red")
            return None

    def _main(self) -> None:
        try:
            if self.interactive:
                self._run_interactive()
            else:
                # Each piped line is echoed once, as "> line": the log's record of it (and of the
                # order it sent) stays in the JSON file, off a terminal that stderr may be.
                with self._quiet_logs():
                    self._run_script()
        except pykka.ActorDeadError:
            pass
        except Exception as exc:  # the terminal must never die silently
            self.log.exception("console_terminal_failed", error=str(exc))
            with contextlib.suppress(Exception):
                self.say(f"console failed: {exc}; see the log", "bold red")

    # -- start-up ----------------------------------------------------------------------------------------
    def _wait_for_startup(self, show: Callable[[tuple[Stage, ...]], None]) -> tuple[Stage, ...]:
        """Poll the start-up stages until all are done or the timeout passes; ``show`` renders them.
        A venue not reached is said once, at its first failure, with what to check; still not
        reached at the timeout, the program stops with status 1. Then an ``--instrument`` that is
        not listed stops it with status 2 (known only once the lists are in)."""
        deadline = time.monotonic() + self.cs.startup_timeout_s
        stages: tuple[Stage, ...] = ()
        link = Link(None, False)
        said_unreachable = False
        while not self.stopped.is_set():
            stages = self.ask(GetStartup())
            link = self.ask(GetLink())
            status = link.status
            # Said at the second failed attempt: by then the status is the link's own failure (an
            # actor's request for the status, once at start-up, gives one that says only who asked).
            if not (said_unreachable or self._link_was_up) and status is not None \
                    and status.state is ConnectionState.DISCONNECTED and status.attempt >= 2:
                said_unreachable = True
                self.say(self._unreachable_text(status), "bold red")
            self._link_was_up = self._link_was_up or link.up
            show(stages)
            if all(s.done for s in stages):
                break
            if time.monotonic() > deadline:
                if not link.up:
                    self.log.info("console_venue_unreachable", venue=self.settings.venue,
                                     url=self.settings.venue_url, timeout_s=self.cs.startup_timeout_s,
                                     detail=link.status.detail if link.status is not None else "")
                    self._stop(f"the {self.settings.venue} venue not reachable within the start-up timeout "
                               f"({self.cs.startup_timeout_s:g} s, console.startup_timeout_s); stopping",
                               ExitStatus.FAILED)
                    return stages
                self.say(f"start-up incomplete after {self.cs.startup_timeout_s:g} s: {startup_text(stages)}; "
                         "orders are refused until the data is there", "yellow")
                self.log.warning("console_startup_incomplete", stages=startup_text(stages))
                break
            time.sleep(0.2)
        if not self.stopped.is_set() and self.cs.instrument and all(s.done for s in stages):
            self._check_instrument_flag(self.cs.instrument)
        return stages

    def _unreachable_text(self, link: ConnectionStatus) -> str:
        return (f"cannot reach the {self.settings.venue} venue ({link.detail}). Check the network, the URL "
                f"(--venue-url or deribit.url: {self.settings.venue_url or 'the embedded simulator'}) and the venue "
                f"(--venue); trying until the start-up timeout ({self.cs.startup_timeout_s:g} s)")

    def _check_instrument_flag(self, given: str) -> None:
        """``--instrument`` (console.instrument) names a listed future, or the program stops with
        status 2, saying what was given and what is listed."""
        futures = list(self.ask(GetChoices()).futures)
        if not futures or not isinstance(pick_future(given, futures), ParseError):
            return
        names = [f.instrument_name for f in futures]
        listed = ", ".join(names[:6]) + (f", ... ({len(names)} futures)" if len(names) > 6 else "")
        currencies = ",".join(self.settings.currencies)
        self.log.info("console_instrument_not_listed", instrument=given, listed=names[:20])
        self._stop(f"--instrument {given} is not listed", ExitStatus.USAGE,
                   f"--instrument {given}: not a listed future of {currencies}; listed: {listed}. "
                   "Give one of them, or leave --instrument out to choose at start-up; stopping")

    def _stop(self, reason: str, status: ExitStatus, said: str | None = None) -> None:
        """Say why (``said``, else the reason), stop the program with ``status``, and end this
        terminal's work."""
        self.say(said or reason, "bold red" if status is not ExitStatus.OK else "")
        self.ask(StopProgram(reason, status))
        self.stopped.set()

    # -- a piped session's outcome -------------------------------------------------------------------------
    def note_failure(self, what: str) -> None:
        """A line refused, an order rejected by the exchange, a line that failed (any thread)."""
        with self._failures_lock:
            self.failures += 1
            if len(self.failures_named) < 5:
                self.failures_named.append(what)

    def _session_end(self, reason: str) -> None:
        """Stop after piped input: status 1 when any line was refused, rejected or failed (said)."""
        with self._failures_lock:
            failures, named = self.failures, list(self.failures_named)
        if not failures:
            self.ask(StopProgram(reason, ExitStatus.OK))
            self.stopped.set()
            return
        shown = "; ".join(named) + ("; ..." if failures > len(named) else "")
        self._stop(reason, ExitStatus.FAILED,
                   f"{reason}: {failures} line(s) refused, rejected or failed ({shown}); exit status 1")

    def _configure(self, instrument: str | None, multiplier: float | None) -> str | None:
        error = self.ask(Configure(instrument, multiplier))
        if error is None:
            # What a restarted actor is told: the answer at once (the actor may fail before it
            # says more), then the name it resolved to (not a number or an empty answer).
            self.instrument = instrument or self.instrument
            self.size_multiplier = multiplier or self.size_multiplier
            if instrument is not None:
                self.choices = self.ask(GetChoices())
                self.instrument = self.choices.instrument or self.instrument
        return error

    # -- piped input ---------------------------------------------------------------------------------------
    def _read(self) -> str | None:
        try:
            line = self.stdin.readline()
        except (OSError, ValueError):
            return None
        return line if line else None

    def _run_script(self) -> None:
        seen: set[str] = set()

        def show(stages: tuple[Stage, ...]) -> None:
            for stage in stages:  # in order: a stage is told once those before it are
                if not stage.done:
                    return
                if stage.name.split(" (")[0] not in seen:
                    seen.add(stage.name.split(" (")[0])
                    self.ask(Say(f"start-up: {stage.name}{' (' + stage.detail + ')' if stage.detail else ''}"))

        self._wait_for_startup(show)
        if self.stopped.is_set():
            return
        lines_read = 0
        choices = self.ask(GetChoices())
        if not self.cs.instrument or not self.cs.size_multiplier:
            self.ask(Say(choices.futures_listing(", ")))
        instrument = self.cs.instrument or None
        if instrument is None:
            line = self._read()
            if line is None:
                self.log.info("console_no_input", reason="standard input is empty; running without a console")
                return
            lines_read += 1
            if _is_quit(line):
                self._session_end("quit")
                return
            instrument = line.strip()
        multiplier: float | None = self.cs.size_multiplier or None
        if multiplier is None:
            line = self._read()
            if line is None:
                self._end(lines_read)
                return
            lines_read += 1
            if _is_quit(line):
                self._session_end("quit")
                return
            parsed = parse_size_multiplier(line)
            if isinstance(parsed, ParseError):
                self.ask(Say(f"console: {parsed}", "bold red"))
                self.note_failure(f"size multiplier {line.strip()[:40]!r}")
                self._session_end("stopping")
                return
            multiplier = parsed
        error = self._configure(instrument, multiplier)
        if error is not None:
            self.ask(Say(f"console: {error}", "bold red"))
            self.note_failure(f"instrument {instrument[:40]!r}")
            self._session_end("stopping")
            return
        while not self.stopped.is_set():
            line = self._read()
            if line is None:
                self._end(lines_read)
                return
            lines_read += 1
            if not line.strip():
                continue
            self.ask(Say(f"> {line.rstrip()}", "bold"))
            outcome = self.ask_for_line(RunLine(line, wait=True), line) or LineOutcome(error=True)
            if outcome.error:
                self.note_failure(f"line {lines_read} {line.strip()[:40]!r}")
            if outcome.wait_key is not None:
                # A wait that fails is over: the next line runs.
                while not self.stopped.is_set() and self.ask_for_line(WaitDone(outcome.wait_key), line) is False:
                    time.sleep(0.02)
            if outcome.quit:
                self._session_end("quit")
                return
            if outcome.follow_up is not None:
                answer = self._read()
                if answer is None:
                    self._end(lines_read)
                    return
                lines_read += 1
                if _is_quit(answer):
                    self._session_end("quit")
                    return
                if outcome.follow_up == "instrument":
                    error = self._configure(answer.strip(), None)
                else:
                    parsed = parse_size_multiplier(answer)
                    error = str(parsed) if isinstance(parsed, ParseError) else self._configure(None, parsed)
                if error is not None:
                    self.ask(Say(f"console: {error}", "red"))
                    self.note_failure(f"line {lines_read} {answer.strip()[:40]!r}")

    def _end(self, lines_read: int) -> None:
        if lines_read:
            self._session_end("end of console input")
        else:
            self.log.info("console_no_input", reason="standard input is empty; running without a console")

    # -- a terminal ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _quiet_logs(self, level: int = logging.WARNING) -> Iterator[None]:
        """While the console owns the terminal, log lines on it are ``level`` and above: piped
        lines with their echo keep warnings on a terminal's stderr; a prompt shows none (the
        console says what matters in its own words; the JSON log file keeps everything)."""
        handlers = [h for h in logging.getLogger().handlers
                    if type(h) is logging.StreamHandler and isatty(getattr(h, "stream", None))]
        saved = [(h, h.level, h.stream) for h in handlers]
        self.log_handlers = list(handlers)
        for handler in handlers:
            handler.setLevel(max(handler.level, level))
        try:
            yield
        finally:
            for handler, level, stream in saved:
                handler.setLevel(level)
                handler.setStream(stream)

    @contextlib.contextmanager
    def _screen_owns_terminal(self) -> Iterator[None]:
        """While the full screen is up nothing else writes to the terminal: no log record (the
        JSON log file keeps everything), and what anything prints (the console's lines, a stray
        print) goes to the messages pane."""
        assert self.screen is not None
        saved = [(h, h.level) for h in self.log_handlers]
        for handler in self.log_handlers:
            handler.setLevel(NO_LOG_RECORDS)
        self.screen.full_screen = True
        try:
            with contextlib.redirect_stdout(self.screen), contextlib.redirect_stderr(self.screen):
                yield
        finally:
            self.screen.full_screen = False
            for handler, level in saved:
                handler.setLevel(level)

    def _run_interactive(self) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory
        from prompt_toolkit.patch_stdout import patch_stdout
        from rich.progress import BarColumn, Progress, TaskID, TextColumn

        history_path = Path(self.settings.data_dir) / self.cs.history_file
        try:
            history_path.parent.mkdir(parents=True, exist_ok=True)
            history: History = FileHistory(str(history_path))
        except OSError as exc:
            self.log.warning("console_history_unavailable", path=str(history_path), error=str(exc))
            history = InMemoryHistory()
        session: PromptSession[str] = PromptSession(history=history, completer=CommandCompleter(self),
                                                    complete_while_typing=False)
        with self._quiet_logs(NO_LOG_RECORDS):
            progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                                TextColumn("{task.fields[detail]}", markup=False), console=self.out,
                                transient=False)
            tasks: dict[str, TaskID] = {}

            def show(stages: tuple[Stage, ...]) -> None:
                for stage in stages:
                    key = stage.name.split(" (")[0]
                    if key not in tasks:
                        tasks[key] = progress.add_task(stage.name, total=stage.total, detail=stage.detail)
                    progress.update(tasks[key], description=("done    " if stage.done else "waiting ") + stage.name,
                                    completed=stage.total if stage.done else stage.completed, total=stage.total,
                                    detail=stage.detail)

            self.say("starting: connecting to the exchange (Ctrl-C stops the program)", "bold")
            with progress:
                self._wait_for_startup(show)
            with patch_stdout(raw=True):
                for handler in logging.getLogger().handlers:
                    if type(handler) is logging.StreamHandler and isatty(getattr(handler, "stream", None)):
                        handler.setStream(sys.stderr)
                chosen = self._until_quit(lambda: self._choose_at_start(session))
                if chosen and not self.full_screen:
                    self._until_quit(lambda: self._prompt_loop(session))
            if chosen and self.full_screen and not self.stopped.is_set():
                with self._screen_owns_terminal():
                    self._until_quit(lambda: self.run_screen(history))
                # The screen is gone with the terminal's alternate screen: its last messages stay.
                assert self.screen is not None
                for line in self.screen.messages.lines()[1][-LAST_MESSAGES_KEPT:]:
                    self.screen.write(line + "\n")

    def _until_quit(self, run: Callable[[], bool | None]) -> bool:
        """``run()``'s answer (None: True); Ctrl-D (EOFError) quits the program: False."""
        try:
            return run() is not False
        except EOFError:
            if not self.stopped.is_set():
                self.ask(RunLine("quit"))
            return False

    # -- the full screen ---------------------------------------------------------------------------------
    def run_screen(self, history: History, **io: Any) -> None:
        """The full-screen desk until quit; ``io``: prompt_toolkit's ``input`` and ``output``
        (tests); by default the terminal's."""
        from prompt_toolkit.output import create_output

        from console.screen import DeskScreen

        assert self.screen is not None
        if "output" not in io:
            io["output"] = create_output(stdout=self.screen.stream)  # type: ignore[arg-type]
        screen = DeskScreen(self, self.screen.messages, history, CommandCompleter(self), hz=self.cs.refresh_hz,
                            stop_on=(pykka.ActorDeadError,), **io)
        self.choices = self.ask(GetChoices())
        screen.prompt_text = self.prompt()
        self.app, self.desk_screen = screen.app, screen
        try:
            if not self.stopped.is_set():
                screen.run()
        finally:
            self.app = None

    def frame(self, width: int, height: int) -> ScreenFrame:
        return self.ask(GetScreenFrame(width, height), timeout=10.0)

    def move_focus(self, move: FocusMove) -> None:
        self.ask(MoveChainFocus(move))

    def prompt(self) -> str:
        if self.asking == "instrument":
            default = f", Enter: {self.choices.default}" if self.choices.default else ""
            return f"instrument (number or name{default}, Tab completes): "
        if self.asking == "multiplier":
            return "size multiplier: "
        multiplier = self.choices.size_multiplier
        return f"{self.choices.instrument} x{multiplier:g}> " if multiplier else \
            f"{self.choices.instrument} (no size multiplier)> "

    def enter(self, text: str) -> bool:
        """A line typed on the full screen (shown in the messages first), or the answer to the
        question asked; True when the program stops."""
        asking = self.asking
        self.say(f"{self.prompt()}{text}", "bold")
        if asking is not None:
            if asking == "instrument":
                error = self._configure(text.strip(), None)
            else:
                parsed = parse_size_multiplier(text)
                error = str(parsed) if isinstance(parsed, ParseError) else self._configure(None, parsed)
            if error is not None:
                self.say(error, "red")
            else:
                self.asking = None
        elif text.strip():
            outcome = self.ask_for_line(RunLine(text), text) or LineOutcome(error=True)
            if outcome.quit:
                return True
            if outcome.follow_up is not None:
                self.asking = outcome.follow_up
        self.choices = self.ask(GetChoices())
        if self.asking == "instrument":
            self.say(self.choices.futures_listing("  "))
        self.asking_instrument = self.asking == "instrument"
        return False

    def failed(self, what: str, error: BaseException) -> None:
        self.log.warning("console_screen_failed", what=what[:200], error=f"{type(error).__name__}: {error}")
        with contextlib.suppress(Exception):
            self.say(f"error while handling {what[:200]!r}: {type(error).__name__}: {error}; see the log", "bold red")

    def _prompt(self, session: PromptSession[str], message: str) -> str:
        """One prompt; Ctrl-C clears the line and asks again, Ctrl-D raises EOFError."""
        screen = self.screen
        while True:
            # Nothing is written directly while the prompt is drawn: the lock is held from here
            # until the prompt runs (then lines go above it).
            held = screen is not None and screen.lock.acquire(timeout=5.0)

            def running() -> None:
                nonlocal held
                if held and screen is not None:
                    held = False
                    screen.lock.release()

            try:
                self.app = session.app
                if screen is not None:
                    screen.app = session.app
                return session.prompt(message, handle_sigint=False, pre_run=running)
            except KeyboardInterrupt:
                continue
            finally:
                running()
                self.app = None
                if screen is not None:
                    screen.app = None

    def _choose(self, session: PromptSession[str], what: Literal["instrument", "multiplier"]) -> bool:
        """Ask for the instrument or the multiplier until valid; False when the user quit (``quit``
        or ``exit`` as the answer stops the program, as at the prompt)."""
        while not self.stopped.is_set():
            self.choices = self.ask(GetChoices())
            if what == "instrument":
                self.say(self.choices.futures_listing("  "))
                self.asking_instrument = True
                try:
                    default = f", Enter: {self.choices.default}" if self.choices.default else ""
                    answer = self._prompt(session, f"instrument (number or name{default}, Tab completes): ")
                finally:
                    self.asking_instrument = False
            else:
                answer = self._prompt(session, "size multiplier: ")
            if _is_quit(answer):
                self.ask(RunLine(answer))
                return False
            if what == "instrument":
                error = self._configure(answer.strip(), None)
            else:
                parsed = parse_size_multiplier(answer)
                error = str(parsed) if isinstance(parsed, ParseError) else self._configure(None, parsed)
            if error is None:
                return True
            self.say(error, "red")
        return False

    def _choose_at_start(self, session: PromptSession[str]) -> bool:
        """The instrument and multiplier from the settings, else asked; False when the user quit."""
        if self.cs.instrument and self._configure(self.cs.instrument, None) is None:
            pass
        elif self.cs.instrument:
            self.say(f"--instrument {self.cs.instrument}: not a listed future; choose one", "red")
            if not self._choose(session, "instrument"):
                return False
        elif not self._choose(session, "instrument"):
            return False
        error = self._configure(None, self.cs.size_multiplier) if self.cs.size_multiplier else None
        if error is not None:
            self.say(f"--size-multiplier {self.cs.size_multiplier:g}: {error}; choose one", "red")
        return not ((error is not None or not self.cs.size_multiplier) and not self._choose(session, "multiplier"))

    def _prompt_loop(self, session: PromptSession[str]) -> None:
        """The line console (--plain): a prompt, a line, its output above the next prompt."""
        while not self.stopped.is_set():
            self.choices = self.ask(GetChoices())
            text = self._prompt(session, self.prompt())
            outcome = self.ask_for_line(RunLine(text), text) or LineOutcome(error=True)
            if outcome.quit:
                return
            if outcome.follow_up is not None and not self._choose(session, outcome.follow_up):
                return
