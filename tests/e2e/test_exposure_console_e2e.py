"""The exposure assistant end to end from the console: ``python main.py`` on its embedded simulator
in a pseudo-terminal; ``target`` plans, ``confirm`` hands the plan to the Assistant, whose post-only
orders the simulator's takers fill; ``cancel plan`` half-way leaves no plan order open. The
simulator's own state (positions, open orders) is checked over its API.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.terminal import PseudoTerminal, program_args, simulator_state, simulator_url


def plan_orders(url: str) -> list[dict]:
    return [o for o in simulator_state(url)[1] if re.fullmatch(r"plan-\d+-\d+", o.get("label", ""))]


def start(tmp_path: Path) -> tuple[PseudoTerminal, str]:
    term = PseudoTerminal(program_args(tmp_path, "--instrument", "BTC-PERPETUAL", "--size-multiplier", "1"),
                          tmp_path)
    try:
        # Start-up shows its progress (the portfolio reconciled among it), then what is traded.
        term.expect(r"trading BTC-PERPETUAL, size multiplier 1 \(a1 = 1 USD\)", timeout=90)
        term.expect(r"BTC-PERPETUAL x1>", timeout=30)
        return term, simulator_url(tmp_path)
    except BaseException:
        term.close()  # the program must not outlive a failed start
        raise


def test_target_confirm_and_the_legs_fill(tmp_path: Path) -> None:
    term, url = start(tmp_path)
    try:
        term.type("target vega 5000 BTC 30d\r")
        tolerance = float(term.expect(r"-> 5,000\.00 USD/vol pt \(within ([\d,.]+)\)", timeout=60).group(1)
                          .replace(",", ""))
        term.expect(r"nothing sent: confirm")
        assert plan_orders(url) == [] and simulator_state(url)[0] == []  # nothing sent before confirm
        term.type("confirm\r")
        plan_id = term.expect(r"sent: plan (\d+) to the assistant").group(1)
        term.expect(rf"plan {plan_id} BTC: done \(every leg filled\)", timeout=240)
        reached = float(term.expect(r"vega reached ([\d,.]+) of the target").group(1).replace(",", ""))
        assert abs(reached - 5000.0) <= tolerance
        positions, orders = simulator_state(url)
        assert positions and all(p["kind"] == "option" and p["size"] > 0 for p in positions)
        assert [o for o in orders if o.get("label", "").startswith(f"plan-{plan_id}-")] == []
    finally:
        term.close()


def test_cancel_plan_half_way_leaves_no_plan_order_open(tmp_path: Path) -> None:
    term, url = start(tmp_path)
    try:
        term.type("target vega 5000 BTC 30d\r")
        term.expect(r"nothing sent: confirm", timeout=60)
        term.type("confirm\r")
        plan_id = term.expect(r"sent: plan (\d+) to the assistant").group(1)
        term.expect(rf"filled: buy [\d.]+ \S+ @ [\d.]+ \[plan-{plan_id}-\d+\]", timeout=120)
        term.type("cancel plan\r")
        term.expect(rf"plan {plan_id} BTC: cancelled", timeout=30)
        assert plan_orders(url) == []
    finally:
        term.close()
