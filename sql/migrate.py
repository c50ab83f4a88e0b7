"""Take a database to this program's schema now, without a deadline: ``python -m sql.migrate --db URL``.

The Recorder migrates at start too, but gives the schema :data:`sql.store.SCHEMA_DEADLINE_S`
(120 s) before it spools and tries again: version 5 copies every option row of version 4 (one UTC
day a statement, a ``schema_migration_progress`` log line each), which on PostgreSQL takes about a
minute per 10 million rows. Run this first for a larger database, while no desk writes to it.
"""

from __future__ import annotations

import argparse
import sys

from sql.engine import SchemaVersionError, create_schema, make_engine, mask_url


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m sql.migrate")
    parser.add_argument("--db", required=True, help="the database URL (sqlite:///... or postgresql+psycopg2://...)")
    args = parser.parse_args(argv)
    engine = make_engine(args.db)
    try:
        version = create_schema(engine)
    except SchemaVersionError as exc:
        print(f"{mask_url(args.db)}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"{mask_url(args.db)}: schema version {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
