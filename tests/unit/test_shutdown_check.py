"""What the safe shutdown says about the account (deribit.shutdown_check), in every case: verified
none open, some still open, unverifiable, no credentials, paper, replay, mainnet without --live."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from deribit.codec import RpcResponse
from deribit.shutdown_check import (
    CheckUnderWay,
    Findings,
    Reach,
    describe_order,
    last_link_via,
    reach_of,
    report,
    settled,
)
from messages.account import OrderUpdate
from tests.support.settings import make_settings

BOTH = ("BTC", "ETH")
VIA = "a last connection made for it (the Connection is not running)"


def order(order_id: str, **fields: Any) -> OrderUpdate:
    values: dict[str, Any] = {"instrument_name": "BTC-PERPETUAL", "order_state": "open", "order_type": "limit",
                              "direction": "buy", "amount": 100.0, "price": 54321.5, "label": "manual_api_1"}
    return OrderUpdate(order_id=order_id, **{**values, **fields})


def found(**fields: Any) -> Findings:
    return Findings(**{"via": VIA, "currencies": BOTH, "cancel_sent": True, **fields})


def test_verified_none_open_names_the_currencies_checked_and_the_scope() -> None:
    text = report(Reach.ORDERS, found(cancelled=2, checked=(("BTC", ()), ("ETH", ()))), venue="testnet")
    assert "cancelled 2" in text and VIA in text
    assert "Verified: no open orders on BTC, ETH" in text
    assert "the currencies this desk trades" in text and "cancel_all covers the whole account" in text
    assert "UNKNOWN" not in text and "STILL OPEN" not in text


def test_orders_still_open_are_listed_one_by_one() -> None:
    stop = order("ETH-77", instrument_name="ETH-PERPETUAL", direction="sell", amount=3.0, price="market_price",
                 order_type="stop_market", order_state="untriggered", trigger="mark_price", trigger_price=2950.0,
                 label="")
    text = report(Reach.ORDERS, found(cancelled=0, checked=(("BTC", (order("BTC-1", filled_amount=20.0),)),
                                                            ("ETH", (stop,)))), venue="mainnet")
    lines = text.splitlines()
    assert "STILL OPEN after it on BTC, ETH (2):" in lines
    assert ("  - BTC-PERPETUAL buy 100 at 54321.5, filled 20, label 'manual_api_1', order id BTC-1") in lines
    assert ("  - ETH-PERPETUAL sell 3 at market, untriggered, mark_price trigger at 2950, no label, "
            "order id ETH-77") in lines
    assert "https://www.deribit.com" in text and "Verified" not in text


@pytest.mark.parametrize("failure", [
    found(cancel_sent=False, failed="login refused: invalid_credentials (code 13004)"),
    found(cancel_sent=False, failed="cannot connect to wss://test.deribit.com/ws/api/v2: timed out"),
    found(cancel_sent=True, failed="no answer to private/cancel_all within 3.0 s"),
    found(cancelled=1, failed="no answer to private/get_open_orders_by_currency within 2.5 s"),
])
def test_what_could_not_be_verified_is_unknown_and_says_where_to_look(failure: Findings) -> None:
    text = report(Reach.ORDERS, failure, venue="testnet")
    assert "The state of open orders on BTC, ETH is UNKNOWN" in text and failure.failed in text
    assert "https://test.deribit.com" in text
    assert "Verified" not in text and "STILL OPEN" not in text
    if not failure.cancel_sent:
        assert "cancel_all could not be sent" in text
    elif failure.cancelled is None:
        assert "sent through" in text and "not answered" in text


def test_one_currency_verified_and_the_other_unknown() -> None:
    text = report(Reach.ORDERS, found(cancelled=1, checked=(("BTC", ()),), failed="connection lost (EOF)"),
                  venue="testnet")
    assert "Verified: no open orders on BTC (checked after the cancel: the currencies that answered" in text
    assert "The state of open orders on ETH is UNKNOWN (connection lost (EOF))" in text


def test_a_refused_cancel_is_said_and_the_check_still_counts() -> None:
    text = report(Reach.ORDERS, found(cancel_error="too_many_requests (code 10028)",
                                      checked=(("BTC", (order("BTC-9"),)), ("ETH", ()))), venue="testnet")
    assert "cancel_all through a last connection made for it (the Connection is not running) failed: " \
           "too_many_requests (code 10028)" in text
    assert "order id BTC-9" in text


def test_nothing_found_at_all_is_unknown() -> None:
    text = report(Reach.ORDERS, None, venue="simulator")
    assert "UNKNOWN" in text and "get_open_orders_by_currency" in text and "cancelled" not in text


@pytest.mark.parametrize(("reach", "says"), [
    (Reach.NO_CREDENTIALS, "no credentials are configured, so this program could place no order"),
    (Reach.PAPER, "paper mode sent no order to the exchange"),
    (Reach.REPLAY, "a replay sends nothing to an exchange"),
    (Reach.READ_ONLY, "on mainnet without --live this program could send no order"),
])
def test_when_nothing_could_have_been_sent_it_says_so(reach: Reach, says: str) -> None:
    text = report(reach, None, venue="mainnet")
    assert says in text and "nothing was cancelled or checked" in text and "UNKNOWN" not in text


@pytest.mark.parametrize(("values", "replay", "reach"), [
    ({"venue": "testnet"}, False, Reach.ORDERS),
    ({"venue": "testnet"}, True, Reach.REPLAY),
    ({"venue": "testnet", "paper": True}, False, Reach.PAPER),
    ({"venue": "mainnet"}, False, Reach.READ_ONLY),
    ({"venue": "mainnet", "live": True}, False, Reach.ORDERS),
    ({"venue": "testnet", "deribit.client_secret": ""}, False, Reach.NO_CREDENTIALS),
])
def test_reach_follows_the_settings(tmp_path: Path, values: dict[str, Any], replay: bool, reach: Reach) -> None:
    settings = make_settings({"deribit.client_id": "id", "deribit.client_secret": "secret", **values},
                             tmp_path=tmp_path)
    assert reach_of(settings, replay=replay) is reach


def test_settled_only_when_every_currency_was_checked_and_nothing_is_open() -> None:
    assert settled(found(cancelled=0, checked=(("BTC", ()), ("ETH", ()))))
    assert not settled(None)
    assert not settled(found(cancelled=0, checked=(("BTC", ()),)))
    assert not settled(found(cancelled=0, checked=(("BTC", ()), ("ETH", (order("E-1"),)))))


def test_a_check_under_way_is_done_when_every_currency_answered_or_it_failed() -> None:
    check = CheckUnderWay(via="the Connection", currencies=BOTH, cancel_sent=True, cancelled=3)
    check.checked["ETH"] = ()
    assert not check.done
    check.checked["BTC"] = (order("B-1"),)
    assert check.done
    assert check.findings().checked == (("BTC", (order("B-1"),)), ("ETH", ()))  # in the configured order
    failing = CheckUnderWay(via="the Connection", currencies=BOTH)
    failing.fail("not connected; not sent")
    failing.fail("a later reason")
    assert failing.done and failing.findings().failed == "not connected; not sent"


def test_the_last_connection_says_why_it_was_made() -> None:
    assert "the Connection is not running" in last_link_via(None, running=False, waited_s=0)
    assert "did not finish within 3 s" in last_link_via(None, running=True, waited_s=3)
    refused = found(cancel_sent=False, failed="not logged in; not sent")
    assert "the Connection could not: not logged in; not sent" in last_link_via(refused, running=True, waited_s=0)
    still = found(cancelled=0, checked=(("BTC", (order("B-1"),)), ("ETH", ())))
    assert "still open after the Connection's cancel_all" in last_link_via(still, running=True, waited_s=0)


def test_describe_order_without_a_price() -> None:
    assert describe_order(order("B-2", price=None, label="")) == "BTC-PERPETUAL buy 100 at market, no label, " \
                                                                  "order id B-2"


def test_an_open_order_the_check_cannot_read_makes_it_unknown_not_clear() -> None:
    readable = msgspec.json.encode(order("B-1")).decode()
    unreadable = json.dumps({**json.loads(readable), "order_id": "B-2", "amount": "a lot"})
    check = CheckUnderWay(via="the Connection", currencies=("BTC",), cancel_sent=True, cancelled=0)
    answer = RpcResponse(id=1, result=msgspec.Raw(f"[{readable},{unreadable}]".encode()))
    assert not check.take_open_orders("BTC", "private/get_open_orders_by_currency", answer)
    findings = check.findings()
    assert findings.checked == () and findings.failed is not None and "B-2" in findings.failed
    assert "amount" in findings.failed and not settled(findings)
    fine = CheckUnderWay(via="the Connection", currencies=("BTC",), cancel_sent=True, cancelled=0)
    assert fine.take_open_orders("BTC", "private/get_open_orders_by_currency",
                                 RpcResponse(id=2, result=msgspec.Raw(f"[{readable}]".encode())))
    assert fine.findings().checked == (("BTC", (order("B-1"),)),)
