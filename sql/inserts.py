"""Inserts that ignore conflicts: a row whose key is there already adds nothing."""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert


def insert_ignoring_conflicts(table: Table, dialect_name: str) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` on PostgreSQL and SQLite."""
    if dialect_name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect_name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise ValueError(f"unsupported database dialect {dialect_name!r}: only sqlite and postgresql")
