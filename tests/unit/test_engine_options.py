"""The PostgreSQL statement timeout travels in libpq's ``options``: what the database URL (or PGOPTIONS) already
asks there must survive it, as libpq would have applied it without us."""

from __future__ import annotations

from pathlib import Path

import pytest

from idp.config import Settings
from idp.database import engine_options

URL = "postgresql+psycopg://idp@db.example/idp"


def options(tmp_path: Path, url: str, seconds: int = 10) -> str | None:
    settings = Settings(data_dir=tmp_path, database_url=url, database_statement_timeout_seconds=seconds)
    connect_args: dict[str, object] = engine_options(settings)["connect_args"]
    value = connect_args.get("options")
    return None if value is None else str(value)


def test_the_timeout_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGOPTIONS", raising=False)
    assert options(tmp_path, URL) == "-c statement_timeout=10000"
    assert options(tmp_path, URL, seconds=0) is None  # off: libpq's own options (PGOPTIONS, a service) apply


def test_options_of_the_url_come_first_even_when_given_twice(tmp_path: Path) -> None:
    assert options(tmp_path, URL + "?options=-c%20search_path%3Didp") == "-c search_path=idp -c statement_timeout=10000"
    assert (options(tmp_path, URL + "?options=-csearch_path%3Didp&options=-clock_timeout%3D5s")
            == "-csearch_path=idp -clock_timeout=5s -c statement_timeout=10000")


def test_pgoptions_is_kept_when_the_url_has_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGOPTIONS", "-c search_path=idp")
    assert options(tmp_path, URL) == "-c search_path=idp -c statement_timeout=10000"
    assert options(tmp_path, URL + "?options=-c%20work_mem%3D8MB") == "-c work_mem=8MB -c statement_timeout=10000"
