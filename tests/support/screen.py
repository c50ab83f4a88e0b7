"""The full-screen console without a terminal: prompt_toolkit's own test driver (a pipe input and a
fixed-size VT100 output into a string), and what the application last drew, as text, row by row.
"""

from __future__ import annotations

import io
import re
from typing import Any

from prompt_toolkit.data_structures import Size
from prompt_toolkit.output.vt100 import Vt100_Output

#: Keys as a VT100 terminal sends them.
KEYS = {"f5": "\x1b[15~", "f6": "\x1b[17~", "f7": "\x1b[18~", "f8": "\x1b[19~", "f9": "\x1b[20~", "pageup": "\x1b[5~",
        "pagedown": "\x1b[6~", "end": "\x1b[F", "c-c": "\x03", "c-d": "\x04", "enter": "\r"}


def fixed_output(columns: int = 120, rows: int = 40) -> Vt100_Output:
    """A VT100 output of ``columns`` x ``rows`` writing into a string (never a terminal)."""
    return Vt100_Output(io.StringIO(), lambda: Size(rows=rows, columns=columns), term="xterm", enable_cpr=False)


def screen_rows(app: Any) -> list[str]:
    """What ``app`` drew last, one string per row (the renderer's own copy of the screen)."""
    screen = app.renderer._last_screen
    if screen is None:
        return []
    size = app.output.get_size()
    rows = []
    for y in range(size.rows):
        line = screen.data_buffer[y]
        rows.append("".join(line[x].char for x in range(size.columns)).rstrip())
    return rows


def pane(rows: list[str], title: str) -> list[str]:
    """The rows under the title bar starting with ``title`` down to the next title bar (a row
    starting with a space then capitals, as the screen writes them) or the footer."""
    start = next(n for n, row in enumerate(rows) if row.startswith(f" {title}"))
    out = []
    for row in rows[start + 1:]:
        if re.match(r"^ (POSITIONS|HEDGER|CHAIN|RISK|OPEN ORDERS|MESSAGES|F5/F6)", row):
            break
        out.append(row)
    return out
