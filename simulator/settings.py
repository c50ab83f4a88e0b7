"""Settings of the local Deribit: accounts, chain size, market dynamics, stream rates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

DEFAULT_CLIENT_ID = "desk"
DEFAULT_CLIENT_SECRET = "desk-simulator-secret"


@dataclass(frozen=True, slots=True)
class SimAccount:
    """One API key of the simulator and the coin balances it starts with."""

    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    balances: tuple[tuple[str, float], ...] = (("BTC", 10.0), ("ETH", 100.0), ("USDC", 100_000.0))

    def balance(self, currency: str) -> float:
        return dict(self.balances).get(currency, 0.0)


@dataclass(frozen=True, slots=True)
class SimSettings:
    """Everything that shapes a simulator run. The seed lives beside it (``Simulator(seed, settings)``).

    ``chain`` picks the listing: ``full`` follows Deribit's schedule (several hundred options per
    currency), ``small`` keeps two expiries and a few strikes for fast tests.
    """

    accounts: tuple[SimAccount, ...] = (SimAccount(),)
    currencies: tuple[str, ...] = ("BTC", "ETH")
    chain: Literal["full", "small"] = "full"
    # Starting index levels (USD).
    spot: tuple[tuple[str, float], ...] = (("BTC", 60000.0), ("ETH", 3000.0))
    # Index dynamics: annualised diffusion vol, jumps per year and jump size (log stdev).
    index_vol: float = 0.6
    jumps_per_year: float = 25.0
    jump_size: float = 0.02
    # Annualised futures basis (continuous), before the per-expiry noise.
    basis: float = 0.06
    # Book and ticker updates per instrument per second (Poisson), and the market step.
    updates_per_s: float = 1.0
    step_s: float = 0.1
    index_updates_per_s: float = 1.0
    book_levels: int = 5
    # Option quotes: half-spread in vol points at the top of book.
    spread_vols: float = 1.5
    # Heartbeat interval the server asks for when a client calls public/set_heartbeat without one.
    min_heartbeat_s: float = 10.0
    # Date the listing is built around; None: the clock's date.
    listing_date: date | None = None
    testnet: bool = False
    # Synthetic public trades per instrument per second (prints on trades.* channels).
    public_trades_per_s: float = 0.01
    # Simulated takers: each user limit order resting at or inside the touch of an option book
    # (the best price of its side, the market maker's included) is hit this many times per second
    # (Poisson) for a taker's size (median 20 minimum amounts), so that a post-only order at the mid fills within
    # seconds as on a live book. 0: user orders fill only when the market maker requotes through them.
    option_taker_hits_per_s: float = 0.2
    access_token_ttl_s: int = 900
    # List the USDC linear perpetuals (and BTC's USDC options) beside the inverse instruments.
    linear: bool = True

    @classmethod
    def for_account(
        cls, client_id: str, client_secret: str, balances: dict[str, float], **overrides: Any
    ) -> SimSettings:
        """Settings with one account (what the program's ``[simulator]`` section describes)."""
        account = SimAccount(client_id, client_secret, tuple(balances.items()))
        return cls(accounts=(account,), **overrides)

    @property
    def account_currencies(self) -> tuple[str, ...]:
        """The currencies an account holds: the coins, and USDC when linear instruments are listed."""
        return (*self.currencies, "USDC") if self.linear else self.currencies

    def spot_of(self, currency: str) -> float:
        return dict(self.spot).get(currency, 100.0)

    def account(self, client_id: str) -> SimAccount | None:
        for acc in self.accounts:
            if acc.client_id == client_id:
                return acc
        return None
