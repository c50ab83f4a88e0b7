"""The full-screen console: prompt_toolkit's full-screen ``Application`` showing the desk's panes
(header, positions, hedger, option chain, orders, messages) above the command line.

The screen renders nothing itself: every ``1 / hz`` s it asks its :class:`ScreenBackend` (the
terminal thread, which asks the Console actor) for a :class:`~console.screen_frame.ScreenFrame` of
ANSI texts, replaces the content of the panes whose text changed and redraws once
(prompt_toolkit's renderer then writes only the cells that changed). The messages pane reads the
:class:`~console.screen_frame.MessageLog` the console's output goes to while the screen is up.
Calls into the backend run on one worker thread, in order, so the keyboard never waits for the
actor.

Keys: Enter runs the line; Tab completes; Up/Down history; Ctrl-C clears the line; Ctrl-D (on an
empty line) quits; F5/F6 previous/next expiry, F7 next currency, F8 the chain's other columns
(greeks, open interest, volume), F9 the currency's risk in the chain's pane (and back); PageUp/PageDown
scroll the messages, End back to the newest.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Callable
from typing import Any, Protocol

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.completion import Completer
from prompt_toolkit.formatted_text import ANSI, StyleAndTextTuples, to_formatted_text
from prompt_toolkit.history import History
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout import Float, FloatContainer, HSplit, Layout, VSplit, Window
from prompt_toolkit.layout.controls import BufferControl, FormattedTextControl
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.output import Output
from prompt_toolkit.styles import Style

from console.screen_frame import PANES, FocusMove, MessageLog, ScreenFrame, pane_heights

#: What the footer says the keys do: how to stop first, all of it within 120 columns (it was cut
#: after "Ctrl-D" there).
KEYS_TEXT = ("Ctrl-D/quit stop  F5/F6 expiry  F7 currency  F8 columns  F9 risk  PgUp/Dn/End msgs  Tab complete  "
             "Up/Dn hist  ^C clear")
#: The panes under a title bar (the header has none), top to bottom.
TITLED = ("positions", "hedger", "chain", "orders", "messages")
TITLES = {"positions": "POSITIONS", "hedger": "HEDGER", "chain": "CHAIN", "orders": "OPEN ORDERS",
          "messages": "MESSAGES"}
STYLE = Style.from_dict({"title": "reverse bold", "footer": "reverse", "prompt": "bold",
                         "completion-menu": "bg:#444444 #ffffff"})
_FOCUS_KEYS = {"f5": FocusMove.PREVIOUS_EXPIRY, "f6": FocusMove.NEXT_EXPIRY, "f7": FocusMove.NEXT_CURRENCY,
               "f8": FocusMove.OTHER_COLUMNS, "f9": FocusMove.RISK}


def fragments(text: str) -> StyleAndTextTuples:
    """ANSI text as prompt_toolkit's styled fragments, a run of one style in one fragment (its
    ANSI parser gives one a character, and drawing each costs the screen's redraw most of its time)."""
    merged: StyleAndTextTuples = []
    for style, chars, *_ in to_formatted_text(ANSI(text)):
        if merged and merged[-1][0] == style and "\n" not in chars:
            merged[-1] = (style, merged[-1][1] + chars)
        else:
            merged.append((style, chars))
    return merged


class ScreenBackend(Protocol):
    """What the screen asks for (the terminal thread answers, through the Console actor)."""

    def frame(self, width: int, height: int) -> ScreenFrame: ...
    def move_focus(self, move: FocusMove) -> None: ...
    def enter(self, text: str) -> bool:
        """Run a typed line (or the answer to a question the console asked); True: quit."""
        ...
    def prompt(self) -> str: ...
    def failed(self, what: str, error: BaseException) -> None:
        """Something the screen asked for failed (not the actor's end): say and log it."""
        ...


class StopScreen(Exception):
    """The backend's end (the console stopped): the screen closes."""


class DeskScreen:
    """The application (see the module doc). ``input``/``output``: prompt_toolkit's (a pipe input
    and a fixed-size output in tests); ``stop_on``: exceptions from the backend that end the screen."""

    def __init__(self, backend: ScreenBackend, messages: MessageLog, history: History, completer: Completer, *,
                 hz: float = 4.0, input: Input | None = None, output: Output | None = None,
                 stop_on: tuple[type[BaseException], ...] = ()) -> None:
        self.backend = backend
        self.messages = messages
        self.period = 1.0 / hz
        self.stop_on: tuple[type[BaseException], ...] = (StopScreen, *stop_on)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="console-screen")
        self.texts: dict[str, str] = {}  # each pane's last ANSI text
        self.shown: dict[str, StyleAndTextTuples] = {}  # ... parsed, what the windows show
        self.titles: dict[str, str] = dict(TITLES)
        self.heights = pane_heights(40)
        self.scroll = 0  # message lines scrolled back from the newest
        self.messages_seen = (-1, -1, -1)  # (seq, scroll, height) last shown
        self.prompt_text = backend.prompt()
        self.frames = 0  # frames asked for and applied
        self.redraws = 0  # ... and the screen's redraws
        self.buffer = Buffer(history=history, completer=completer, complete_while_typing=False, multiline=False,
                             accept_handler=self._accept)
        self.app: Application[None] = Application(
            layout=self._layout(), key_bindings=self._keys(), style=STYLE, full_screen=True, mouse_support=False,
            enable_page_navigation_bindings=False, input=input, output=output)
        self.app.after_render += self._drawn

    def _drawn(self, _app: object) -> None:
        self.redraws += 1

    # -- layout -----------------------------------------------------------------------------------------
    def _pane(self, name: str) -> Window:
        return Window(FormattedTextControl(lambda: self.shown.get(name, [])), wrap_lines=False,
                      # Its share, or less on a terminal too small for every share.
                      height=lambda: Dimension(min=1, max=self.heights[name], preferred=self.heights[name]))

    def _title(self, name: str) -> Window:
        return Window(FormattedTextControl(lambda: [("class:title", f" {self.titles[name]} ")]), height=1,
                      style="class:title")

    def _layout(self) -> Layout:
        self.command = Window(BufferControl(self.buffer), height=1)
        rows: list[Any] = [self._pane("header")]
        for name in TITLED:
            rows += [self._title(name), self._pane(name)]
        rows += [Window(FormattedTextControl(lambda: [("class:footer", " " + KEYS_TEXT)]), height=1,
                        style="class:footer"),
                 VSplit([Window(FormattedTextControl(lambda: [("class:prompt", self.prompt_text)]),
                                dont_extend_width=True, height=1), self.command])]
        root = FloatContainer(HSplit(rows), floats=[Float(xcursor=True, ycursor=True,
                                                          content=CompletionsMenu(max_height=8, scroll_offset=1))])
        return Layout(root, focused_element=self.command)

    def _keys(self) -> KeyBindings:
        keys = KeyBindings()

        for key, move in _FOCUS_KEYS.items():
            def focus(_event: KeyPressEvent, move: FocusMove = move) -> None:
                self._submit(lambda: self.backend.move_focus(move), "chain focus", refresh=True)
            keys.add(key)(focus)

        @keys.add("pageup")
        def _back(_event: KeyPressEvent) -> None:
            self.scroll += max(1, self.heights["messages"] - 1)
            self._show_messages()

        @keys.add("pagedown")
        def _forward(_event: KeyPressEvent) -> None:
            self.scroll = max(0, self.scroll - max(1, self.heights["messages"] - 1))
            self._show_messages()

        @keys.add("end")
        def _newest(event: KeyPressEvent) -> None:
            if not self.buffer.text:
                self.scroll = 0
                self._show_messages()
            else:
                self.buffer.cursor_position = len(self.buffer.text)

        @keys.add("c-c")
        def _clear(_event: KeyPressEvent) -> None:
            self.buffer.reset()

        @keys.add("c-d")
        def _quit(event: KeyPressEvent) -> None:
            if not self.buffer.text:
                event.app.exit(exception=EOFError())
            else:
                self.buffer.delete()

        return keys

    # -- the lines --------------------------------------------------------------------------------------
    def _accept(self, buffer: Buffer) -> bool:
        text = buffer.text

        def run() -> None:
            if self.backend.enter(text):
                raise StopScreen("quit")
            self.prompt_text = self.backend.prompt()

        self._submit(run, text, refresh=True)
        return False  # the line is cleared (and kept in the history)

    def _submit(self, call: Callable[[], None], what: str, refresh: bool = False) -> None:
        """``call`` on the worker thread (after what is queued there); then a refresh."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.pool, call)

        def done(finished: asyncio.Future[None]) -> None:
            error = None if finished.cancelled() else finished.exception()
            if isinstance(error, self.stop_on):
                self._exit()
            elif error is not None:
                self._report(what, error)
            elif refresh and self.app.is_running:
                self.app.create_background_task(self._refresh_once())

        future.add_done_callback(done)

    # -- refreshing ---------------------------------------------------------------------------------------
    async def _refresh_once(self) -> None:
        size = self.app.output.get_size()
        loop = asyncio.get_running_loop()
        try:
            frame = await loop.run_in_executor(self.pool, self.backend.frame, size.columns, size.rows)
            self.apply(frame)
        except self.stop_on:
            self._exit()
        except RuntimeError:  # the pool is shut down: the screen is closing
            pass
        except Exception as exc:
            self._report("screen refresh", exc)

    async def _refresh_loop(self) -> None:
        while self.app.is_running:
            started = time.monotonic()
            await self._refresh_once()
            await asyncio.sleep(max(0.0, self.period - (time.monotonic() - started)))

    def _report(self, what: str, error: BaseException) -> None:
        with contextlib.suppress(RuntimeError):  # the pool is shut down: the screen is closing
            self.pool.submit(self.backend.failed, what, error)

    def apply(self, frame: ScreenFrame) -> None:
        """Show ``frame``: the panes whose text changed, one redraw for all."""
        changed = False
        heights = dict(zip(PANES, frame.heights, strict=True))
        if heights != self.heights:
            self.heights, changed = heights, True
        for name in ("header", "positions", "hedger", "chain", "orders"):
            text = frame.pane(name)
            if self.texts.get(name) != text:
                self.texts[name] = text
                self.shown[name] = fragments(text)
                changed = True
        if self.titles["chain"] != frame.chain_title:
            self.titles["chain"] = frame.chain_title
            changed = True
        changed = self._show_messages(redraw=False) or changed
        self.frames += 1
        if changed:
            self.app.invalidate()

    def _show_messages(self, redraw: bool = True) -> bool:
        seq, lines = self.messages.lines()
        height = self.heights["messages"]
        self.scroll = max(0, min(self.scroll, len(lines) - height))
        if (seq, self.scroll, height) == self.messages_seen:
            return False
        self.messages_seen = (seq, self.scroll, height)
        end = len(lines) - self.scroll
        shown = lines[max(0, end - height):end]
        self.shown["messages"] = fragments("\n".join(shown))
        self.titles["messages"] = TITLES["messages"] + (f" (scrolled back {self.scroll} lines; End: newest)"
                                                        if self.scroll else "")
        if redraw:
            self.app.invalidate()
        return True

    # -- running --------------------------------------------------------------------------------------------
    def run(self) -> None:
        """Until quit (Ctrl-D raises EOFError out of here, like the line console's prompt)."""

        def start() -> None:
            self.app.create_background_task(self._refresh_loop())

        try:
            # No exception handler of prompt_toolkit's: it would wait for Enter under the screen.
            self.app.run(pre_run=start, handle_sigint=False, set_exception_handler=False)
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def _exit(self) -> None:
        if self.app.is_running and not self.app.future.done():  # type: ignore[union-attr]
            self.app.exit()

    def close(self) -> None:
        """From any thread: end the screen as Ctrl-D would."""
        app = self.app
        loop = app.loop
        if app.is_running and loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(
                    lambda: app.exit(exception=EOFError()) if app.is_running and not app.future.done() else None)  # type: ignore[union-attr]
