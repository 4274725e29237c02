"""One page of a list page's rows (people, assignments, the audit log), from the ``page`` query argument."""

from __future__ import annotations

from typing import Any

from flask import request
from flask_sqlalchemy.pagination import Pagination
from sqlalchemy import Select

from idp.extensions import db

PER_PAGE = 50
# Beyond any real list; a larger number would overflow the database's OFFSET instead of showing an empty page.
MAX_PAGE = 1_000_000


def paged(query: Select[Any]) -> Pagination:
    """The page of ``query`` (already ordered) the request asks for; the first for a missing, bad or
    out-of-range number."""
    number = request.args.get("page", 1, type=int)
    return db.paginate(query, page=number if 1 <= number <= MAX_PAGE else 1, per_page=PER_PAGE, error_out=False)
