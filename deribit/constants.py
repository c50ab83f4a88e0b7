"""The exchange edge's constants in one place: venue URLs, Deribit's error codes, instrument
states and the perpetuals' expiry. (The simulator keeps its own copies on purpose: it is a
Deribit of its own, made independently of the desk's edge.)"""

from __future__ import annotations

#: The websocket endpoint of each venue the desk trades on.
VENUE_URLS: dict[str, str] = {
    "mainnet": "wss://www.deribit.com/ws/api/v2",
    "testnet": "wss://test.deribit.com/ws/api/v2",
}
#: Where a person checks the account's open orders on each venue.
VENUE_WEB_UI: dict[str, str] = {
    "mainnet": "https://www.deribit.com",
    "testnet": "https://test.deribit.com",
}

#: Deribit's ``too_many_requests``: nothing was done, the request may be sent again later.
RATE_LIMIT_CODE = 10028
#: Deribit's ``order_not_found``: no order of this account has that id.
ORDER_NOT_FOUND = 10004

#: Instrument states (``instrument.state.*`` channels) in which an instrument is listed and trades.
LIVE_STATES: frozenset[str] = frozenset({"created", "started", "open"})
#: Instrument states after which an instrument is gone for good.
GONE_STATES: frozenset[str] = frozenset({"settled", "closed", "terminated", "deactivated", "expired"})

#: The indices Deribit publishes a DVOL (``deribit_volatility_index.{index}``) for.
DVOL_INDICES: frozenset[str] = frozenset({"btc_usd", "eth_usd"})

#: Expiry of perpetuals as Deribit lists them (year 3000), in milliseconds.
PERPETUAL_EXPIRY_MS = 32_503_708_800_000
