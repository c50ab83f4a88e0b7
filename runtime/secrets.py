"""What counts as a secret, and how one is masked: the one list and the one masker.

The logs (runtime/logs.py), the wire log's frame redaction and exchange error texts
(deribit/codec.py), ``config show`` (config/settings.py) and database URLs in messages (sql/) all
take their rule from here. The masker holds the values themselves: the configured secrets and
the database password from the settings, tokens and signatures as soon as the session knows them.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

#: A key whose name holds one of these (any case) holds a secret: ``client_secret``,
#: ``access_token``, ``refresh_token``, ``signature``, ``Authorization``, a URL's ``password`` ...
SECRET_KEY_NAMES: tuple[str, ...] = (
    "secret", "token", "signature", "password", "passwd", "api_key", "api-key", "apikey", "authorization",
)
SECRET_KEY = re.compile("|".join(re.escape(name) for name in SECRET_KEY_NAMES), re.I)
MASK = "***"

#: Values kept by the masker for the run: the configured secrets, and this many of the newest
#: transient ones (tokens and signatures, a new pair every refresh: older ones have expired).
TRANSIENT_KEPT = 32

_lock = threading.Lock()
_lasting: set[str] = set()
_transient: deque[str] = deque(maxlen=TRANSIENT_KEPT)
#: The pattern and the values it matches, replaced together (one assignment: a reader on another
#: thread never sees a value the pattern does not hold).
_masker: tuple[re.Pattern[str] | None, tuple[str, ...]] = (None, ())


def register_secrets(values: Iterable[str | None], *, transient: bool = False) -> None:
    """Values the masker removes wherever they appear from now on: the configured secrets (for the
    run), or ``transient`` ones (access and refresh tokens, signatures) as soon as they are known.
    Values under 4 characters would mask ordinary text and are not taken."""
    global _masker
    with _lock:
        for value in values:
            if value and len(value) >= 4 and value not in _lasting and value not in _transient:
                if transient:
                    _transient.append(value)
                else:
                    _lasting.add(value)
        found = sorted({*_lasting, *_transient}, key=len, reverse=True)  # the longest first: no half-masks
        _masker = (re.compile("|".join(re.escape(s) for s in found)) if found else None, tuple(found))


def scrub_text(text: str) -> str:
    """``text`` with every registered secret replaced by :data:`MASK` (logs, the wire log, exchange
    error texts that reach the console and the audit table)."""
    pattern, values = _masker
    # Substring tests first: about three times faster than the regex on a frame that holds none
    # (the wire log runs every frame through here).
    if pattern is not None and text and any(value in text for value in values):
        return pattern.sub(MASK, text)
    return text


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters plus a note of its full length, for a log line or
    a message that quotes a value someone else chose (a channel name, a path, a flag)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text):,} characters)"


def is_secret_key(key: str) -> bool:
    return SECRET_KEY.search(key) is not None


def mask_value(key: str, value: Any) -> Any:
    """``value`` masked when ``key`` names a secret and there is something to hide."""
    if value not in (None, "", False) and is_secret_key(key):
        return MASK
    return value


def _userinfo(url: str) -> tuple[int, int] | None:
    """Where the password of ``scheme://user:password@host...`` starts and ends in ``url``: after the
    user's colon, up to the LAST @ of the URL (a raw @, / or ? in a password is the user's mistake,
    and the whole of it is still the password; an @ in the query masks more, never less), or None."""
    start = url.find("://")
    if start < 0:
        return None
    start += 3
    at = url.rfind("@", start)
    if at < 0:
        return None
    colon = url.find(":", start, at)
    return None if colon < 0 else (colon + 1, at)


def mask_url(url: str) -> str:
    """The URL with its whole password replaced, for logs, error texts and ``config show``."""
    span = _userinfo(url)
    if span is None or span[0] == span[1]:
        return url
    return f"{url[:span[0]]}{MASK}{url[span[1]:]}"


def url_password(url: str) -> str | None:
    """The URL's password as written, if it has one (all of it, even with an @ in it)."""
    span = _userinfo(url)
    return url[span[0]:span[1]] if span is not None and span[0] < span[1] else None


def url_passwords(url: str) -> tuple[str, ...]:
    """Every form of the URL's password a text may show: as written and percent-decoded (what the
    driver is given), to register with the masker."""
    written = url_password(url)
    if written is None:
        return ()
    return tuple(dict.fromkeys((written, unquote(written))))
