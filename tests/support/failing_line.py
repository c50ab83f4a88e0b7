"""``python -m tests.support.failing_line ARGS``: the program (``main.main(ARGS)``) with one bug put
into its own process: pricing an order line whose amount is :data:`FAILING_AMOUNT` (``a7``) raises
``RuntimeError(INJECTED)``, as a bug in what a line becomes would. The program itself has no test
hook; the end-to-end tests start it through this module to see one line fail in a real terminal.
"""

from __future__ import annotations

import sys
from typing import Any

import console.orders
import main

FAILING_AMOUNT = 7.0
INJECTED = "injected failure"


def install() -> None:
    original = console.orders.orders_for

    def failing(command: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(command, "quantity", None) == FAILING_AMOUNT:
            raise RuntimeError(INJECTED)
        return original(command, *args, **kwargs)

    console.orders.orders_for = failing


if __name__ == "__main__":
    install()
    sys.exit(main.main(sys.argv[1:]))
