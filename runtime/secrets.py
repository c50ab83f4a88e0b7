"""What counts as a secret, and how one is masked: the one list and the one masker.

The logs (runtime/logs.py), the wire log's frame redaction (deribit/codec.py), ``config show``
(config/settings.py) and database URLs in messages (sql/) all take their rule from here.
"""

from __future__ import annotations

import re
from typing import Any

#: A key whose name holds one of these (any case) holds a secret: ``client_secret``,
#: ``access_token``, ``refresh_token``, ``signature``, ``Authorization``, a URL's ``password`` ...
SECRET_KEY_NAMES: tuple[str, ...] = (
    "secret", "token", "signature", "password", "passwd", "api_key", "api-key", "apikey", "authorization",
)
SECRET_KEY = re.compile("|".join(re.escape(name) for name in SECRET_KEY_NAMES), re.I)
MASK = "***"

# scheme://user:password@host...: the password is what sits between the user's colon and the @.
_URL_PASSWORD = re.compile(r"://(?P<user>[^:/@]+):(?P<password>[^@]*)@")


def is_secret_key(key: str) -> bool:
    return SECRET_KEY.search(key) is not None


def mask_value(key: str, value: Any) -> Any:
    """``value`` masked when ``key`` names a secret and there is something to hide."""
    if value not in (None, "", False) and is_secret_key(key):
        return MASK
    return value


def mask_url(url: str) -> str:
    """The URL with any password replaced, for logs, error texts and ``config show``."""
    return _URL_PASSWORD.sub(lambda m: f"://{m['user']}:{MASK}@", url)


def url_password(url: str) -> str | None:
    """The URL's password, if it has one (to register it with the logs' scrubber)."""
    match = _URL_PASSWORD.search(url)
    return match["password"] if match and match["password"] else None
