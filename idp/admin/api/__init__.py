"""The admin REST API under /api/v1 (flask-smorest: marshmallow schemas validate requests, answer 422 with
the field and the reason, and make the OpenAPI 3 document at /api/v1/openapi.json).

Each resource module under this package makes its blueprint ``blp`` with :func:`idp.admin.api.base.blueprint`
(admin token check: GET needs a read or write token, anything else a write token; JSON errors; no CSRF,
since no cookie is used); every module here but ``base`` is registered.
"""

from __future__ import annotations

import pkgutil
import threading
from importlib import import_module
from typing import Any

from flask import Flask, Response
from flask_smorest import Api, Blueprint

from idp.admin.api.base import PREFIX


class _Api(Api):  # type: ignore[misc]
    def __init__(self, app: Flask) -> None:
        self._undocumented: list[tuple[Blueprint, str]] = []
        self._doc_lock = threading.Lock()
        super().__init__(app)

    def _register_error_handlers(self) -> None:
        # flask-smorest would answer every HTTPException of the whole app in JSON (HTML pages included);
        # the API's blueprints carry JSON handlers of their own instead (base.blueprint).
        pass

    def register_blueprint(self, blp: Blueprint, **options: Any) -> None:
        # Routes now, the OpenAPI document when it is first asked for: building it (apispec resolving every
        # schema) was 60% of an app's start-up, paid by every worker and every test, and read by few.
        name = options.get("name", blp.name)
        self._app.extensions["flask-smorest"]["blp_name_to_api"][name] = self
        self._app.register_blueprint(blp, **options)
        self._undocumented.append((blp, name))

    def _openapi_json(self) -> Response:
        with self._doc_lock:
            for blp, name in self._undocumented:
                blp.register_views_in_doc(self, self._app, self.spec, name=name, parameters=None)
                self.spec.tag({"name": name, "description": blp.description})
            self._undocumented.clear()
        doc: Response = super()._openapi_json()
        return doc


def init_api(app: Flask) -> None:
    app.config.update(
        API_TITLE="Identity bridge admin API",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX=PREFIX,
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "info": {"description": "Users, groups, SAML service providers, OIDC clients, AWS accounts, OUs, "
                                    "permission sets, assignments and the audit log. Errors are JSON "
                                    "{code, status, message, errors}; lists are paged {items, page, per_page, "
                                    "total}."},
            "servers": [{"url": "/"}],
            "security": [{"adminToken": []}],
            "components": {"securitySchemes": {"adminToken": {
                "type": "http", "scheme": "bearer",
                "description": "An admin token from `idp admin token create --scope read|write`."}}},
        },
    )
    api = _Api(app)
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if module != "base":
            api.register_blueprint(import_module(f"{__name__}.{module}").blp)
