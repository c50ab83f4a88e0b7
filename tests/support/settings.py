"""The one settings builder of the tests: the defaults with dotted keys laid over them.

``make_settings({"deribit.heartbeat_s": 5, "hedger.max_delta_mismatch": 0.01})`` goes through ``load_settings``
exactly as the command line's ``--set`` does, so every value is validated as the program would;
the environment and any ``settings.toml`` in the working directory are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from config.settings import Settings, load_settings

# A directory with no settings.toml in it, so that none is picked up from wherever the tests run.
NO_SETTINGS_FILE = Path("/nonexistent")

# The simulator's trading account (simulator.settings: SimSettings.for_account) as the desk logs in.
SIM_CLIENT_ID, SIM_CLIENT_SECRET = "desk", "desk-simulator-secret"


def make_settings(values: Mapping[str, Any] | None = None, /, *, tmp_path: Path | None = None,
                  environ: Mapping[str, str] | None = None, **keys: Any) -> Settings:
    """Settings from the defaults and ``values`` (dotted keys: ``"deribit.heartbeat_s"``), then ``keys``
    (top-level keys given as keywords: ``currencies=["BTC"]``).

    With ``tmp_path`` the program's files go under it: ``data_dir`` and ``logging.dir`` default to
    ``tmp_path/data`` and ``tmp_path/logs`` unless given."""
    overrides: dict[str, Any] = {}
    if tmp_path is not None:
        overrides.update({"data_dir": str(tmp_path / "data"), "logging.dir": str(tmp_path / "logs")})
    overrides.update(values or {})
    overrides.update(keys)
    return load_settings(environ=dict(environ or {}), overrides=overrides, cwd=NO_SETTINGS_FILE)

