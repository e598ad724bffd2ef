"""Query pieces that the two backends write differently, chosen when the query is rendered.

A query is built once (query.build_query) without knowing its database; a node here asks the
rendering context which backend it is for (PostgresIndexDatabase adds ``wildcard = "like"``).
"""
from __future__ import annotations

from peewee import ColumnBase, Expression


def _glob(value: str) -> str:
    # DICOM's * and ? are GLOB's; only '[' needs escaping.
    return value.replace("[", "[[]")


def _like(value: str) -> str:
    # PostgreSQL's LIKE is case-sensitive, like GLOB; its escape character is the backslash.
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


class Wildcard(ColumnBase):
    """``field`` matches a DICOM wildcard value (``*`` any run, ``?`` one character), case-sensitively."""

    def __init__(self, field, value: str):
        super().__init__()
        self.field = field
        self.value = value

    def __sql__(self, ctx):
        if ctx.state.wildcard == "like":
            return ctx.sql(Expression(self.field, "LIKE", _like(self.value)))
        return ctx.sql(Expression(self.field, "GLOB", _glob(self.value)))
