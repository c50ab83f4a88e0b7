"""Benchmarks: ``python -m bench NAME --json``.

Each benchmark is a module ``bench/NAME.py`` with ``run(args: list[str]) -> dict``; the runner
prints progress to stderr and the result as one JSON object on the last line of stdout.
"""
