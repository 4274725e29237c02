"""The PostgreSQL statement timeout travels in libpq's ``options``: what the database URL (or PGOPTIONS) already
asks there must survive it, as libpq would have applied it without us. The network bound is libpq's keepalive and
tcp_user_timeout parameters, each left to the URL where it sets it (tests/integration/test_database_partition.py
shows what they do)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from idp.config import Settings
from idp.database import NETWORK_PARAMETERS, engine_options

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


def network(tmp_path: Path, url: str, seconds: int) -> dict[str, object]:
    settings = Settings(data_dir=tmp_path, database_url=url, database_network_timeout_seconds=seconds)
    connect_args: dict[str, object] = engine_options(settings)["connect_args"]
    return {k: v for k, v in connect_args.items() if k in NETWORK_PARAMETERS}


def test_a_silent_server_is_given_up_after_the_network_timeout(tmp_path: Path) -> None:
    assert network(tmp_path, URL, 10) == {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 1,
                                          "keepalives_count": 5, "tcp_user_timeout": 10_000}
    assert network(tmp_path, URL, 1)["keepalives_idle"] == 1
    assert network(tmp_path, URL, 0) == {}  # off: the system's TCP settings apply


def test_long_timeouts_stay_within_what_linux_takes(tmp_path: Path) -> None:
    """More than 127 probes, or an idle time over 32767 s, and Linux refuses the option: libpq then refuses
    every connection. Where tcp_user_timeout means nothing (not Linux), idle + count x interval is the bound."""
    for seconds in (300, 3600):
        given = network(tmp_path, URL, seconds)
        assert given["tcp_user_timeout"] == seconds * 1000
        count, idle, interval = (int(str(given[k])) for k in ("keepalives_count", "keepalives_idle",
                                                               "keepalives_interval"))
        assert count <= 127 and idle <= 32767
        assert seconds <= idle + count * interval <= seconds * 1.5


def test_a_url_that_sets_any_network_parameter_keeps_all_of_its_own(tmp_path: Path) -> None:
    # Mixed with ours, its own would not hold: our tcp_user_timeout would end its keepalives early.
    assert network(tmp_path, URL + "?keepalives_idle=60", 10) == {}
    assert network(tmp_path, URL + "?keepalives=0", 10) == {}


def test_prepared_statements_can_be_turned_off_for_a_transaction_pooler(tmp_path: Path) -> None:
    def connect_args(**given: Any) -> dict[str, object]:
        settings = Settings(data_dir=tmp_path, database_url=URL, **given)
        return dict(engine_options(settings)["connect_args"])

    assert "prepare_threshold" not in connect_args()  # psycopg's own default: prepared after five runs
    assert connect_args(database_prepared_statements=False)["prepare_threshold"] is None  # never
