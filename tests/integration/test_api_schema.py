"""The admin API against its own OpenAPI document: schemathesis generates requests for every operation (valid
ones and invalid ones) with a write token, and checks that none gets a server error and every answer matches
the document (status, content type, headers, body). Bounded for CI: at most 25 generated cases per operation,
the same ones on every run."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from admin_api import bearer
from flask import Flask
from flask.testing import FlaskClient
from helpers import make_user
from hypothesis import HealthCheck, settings

from idp import create_app
from idp.config import Settings
from idp.extensions import db


class _TestApp:
    """The WSGI app schemathesis talks to: the running test's own ``app`` (pytest must know the operations when
    it collects the tests, before any fixture exists; each test then has a fresh app of its own)."""

    app: Flask | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        assert self.app is not None
        return self.app(environ, start_response)


_current = _TestApp()
with tempfile.TemporaryDirectory() as _data_dir:
    _current.app = create_app(Settings(data_dir=Path(_data_dir), secret_key="schema" * 6, log_format="text"))
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", _current)
    with _current.app.app_context():
        db.engine.dispose()
    _current.app = None

schema.config.generation.update(
    max_examples=25, deterministic=True,
    # The API refuses NUL characters (PostgreSQL cannot store them) with a 422 that the document cannot express
    # (test_api_directory shows it): generated "valid" strings must not hold one.
    allow_x00=False,
    # Every request carries the write token; schemathesis still checks that one without it is refused (401).
    with_security_parameters=False,
)
schema.config.checks.update(excluded_check_names=[
    # A schema-valid value may still be refused by a service's business rule (422, with the reason): the
    # document describes the shape of a request, not every rule (an assignment's end must not be past).
    "positive_data_acceptance",
])


@pytest.fixture
def write_token(app: Flask) -> Iterator[str]:
    """A write token for the test's app, where the document's examples exist (so that the operations on one
    object get further than 404)."""
    _current.app = app
    make_user("alice", groups=["staff"])
    yield bearer("write", name="schemathesis")["Authorization"].removeprefix("Bearer ")
    _current.app = None


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
def test_every_operation_matches_the_document(case: Any, write_token: str) -> None:
    # One app per operation: what one generated request creates, the next of the same operation finds.
    case.call_and_validate(headers={"Authorization": "Bearer " + write_token})


def test_the_document_describes_the_api(client: FlaskClient) -> None:
    doc: dict[str, Any] = client.get("/api/v1/openapi.json").json
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"] == "Identity bridge admin API" and doc["info"]["version"] == "v1"
    assert doc["security"] == [{"adminToken": []}]
    assert doc["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"
    # Paths carry /api/v1 themselves: the server is the host that serves the document.
    assert all(path.startswith("/api/v1/") for path in doc["paths"])
    assert doc.get("servers", [{"url": "/"}]) == [{"url": "/"}]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            assert operation.get("summary"), f"{method.upper()} {path} has no summary"
            assert {"401", "403"} <= set(operation["responses"]), f"{method.upper()} {path}"
