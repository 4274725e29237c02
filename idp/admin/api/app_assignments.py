"""/api/v1/app-assignments: which users and groups may use an application (a SAML SP or an OIDC client),
each until an optional end, through :mod:`idp.access.assignments` like the CLI's and the UI's.

An application open to every signed-in user needs no assignment: that is its ``open_to_all`` setting, changed
with PATCH /api/v1/service-providers/{id} or /api/v1/oidc-clients/{client_id}.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView
from sqlalchemy import select

from idp import clock
from idp.access import assignments
from idp.admin.api.assignments import Until, UntilUpdate
from idp.admin.api.base import ErrorSchema, PageArgs, blueprint, caller, page_of, page_schema
from idp.extensions import db
from idp.store import AppAssignment, OidcClient, ServiceProvider, User

blp = blueprint("app_assignments", "/app-assignments",
                "Application assignments: the users and groups that may use a SAML SP or an OIDC client.",
                fields={"app_text": "app"})

ASSIGNMENT_ID = "<int(min=1, max=2147483647):assignment_id>"
_APP = "an SP's entity ID, an OIDC client's client_id, or (when it names one application) its name"
_PRINCIPAL = ("user:NAME, group:NAME, or a bare name (a user, else a known group); a directory group nobody "
              "has signed in with yet needs group:NAME")


class AppAssignmentSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    app = ma.fields.String(required=True, metadata={"description": "the SP's entity ID or the client's client_id"})
    app_kind = ma.fields.String(required=True, validate=ma.validate.OneOf(["saml", "oidc"]))
    app_name = ma.fields.String(required=True)
    principal = ma.fields.String(required=True, metadata={"description": "user:NAME or group:NAME"})
    until = ma.fields.AwareDateTime(allow_none=True, metadata={"description": "the end; null: none"})
    active = ma.fields.Boolean(required=True, metadata={"description": "false once `until` has passed"})
    created_by = ma.fields.String(required=True)
    created_at = ma.fields.AwareDateTime(required=True)


class AppAssignmentQuery(PageArgs):
    app = ma.fields.String(validate=ma.validate.Length(min=1, max=1024), metadata={"description": _APP})
    principal = ma.fields.String(validate=ma.validate.Length(min=1, max=300), metadata={"description": _PRINCIPAL})


class AppAssignmentCreateSchema(ma.Schema):
    app = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=1024),
                           metadata={"description": _APP})
    principal = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=300),
                                 metadata={"description": _PRINCIPAL})
    until = Until(load_default=None)


def _views(rows: list[AppAssignment]) -> list[dict[str, Any]]:
    """The rows with the names they point at, in three queries whatever their number."""
    def names(model: Any, *columns: Any, ids: set[int]) -> dict[int, Any]:
        if not ids:
            return {}
        return {row[0]: row[1:] for row in db.session.execute(select(model.id, *columns).where(model.id.in_(ids)))}

    sps = names(ServiceProvider, ServiceProvider.entity_id, ServiceProvider.name,
                ids={r.sp_id for r in rows if r.sp_id is not None})
    oidc = names(OidcClient, OidcClient.client_id, OidcClient.name,
                 ids={r.client_id for r in rows if r.client_id is not None})
    users = names(User, User.username, ids={r.user_id for r in rows if r.user_id is not None})
    now = clock.now()
    out = []
    for r in rows:
        kind, (key, name) = ("saml", sps[r.sp_id]) if r.sp_id is not None else ("oidc", oidc[r.client_id or 0])
        principal = f"group:{r.group_name}" if r.group_name is not None else f"user:{users[r.user_id or 0][0]}"
        out.append({"id": r.id, "app": key, "app_kind": kind, "app_name": name, "principal": principal,
                    "until": r.until, "active": r.until is None or r.until > now, "created_by": r.created_by,
                    "created_at": r.created_at})
    return out


@blp.route("")
class AppAssignments(MethodView):
    @blp.arguments(AppAssignmentQuery, location="query")
    @blp.response(200, page_schema(AppAssignmentSchema))
    @blp.alt_response(404, schema=ErrorSchema, description="No such application, user or group.")
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Application assignments, oldest first; filtered by application and by user or group."""
        query = select(AppAssignment)
        if "app" in args:
            for column, value in assignments.resolve_app(args["app"]).column.items():
                query = query.where(getattr(AppAssignment, column) == value)
        if "principal" in args:
            query = query.where(assignments.resolve_principal(args["principal"]).matches(AppAssignment))
        found = page_of(query.order_by(AppAssignment.id), args)
        return {**found, "items": _views(found["items"])}

    @blp.arguments(AppAssignmentCreateSchema)
    @blp.response(201, AppAssignmentSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such application, user or group.")
    @blp.alt_response(409, schema=ErrorSchema, description="The application is already assigned to them.")
    def post(self, args: dict[str, Any]) -> dict[str, Any]:
        """Let a user or group use an application, until an optional end."""
        assigned = assignments.assign_app(args["app"], args["principal"], until=args["until"], actor=caller())
        db.session.commit()
        # The id is known once the row is stored.
        return _views([assignments.require_app_assignment(assigned.id or 0)])[0]


@blp.route(f"/{ASSIGNMENT_ID}")
class AppAssignmentItem(MethodView):
    @blp.response(200, AppAssignmentSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such assignment.")
    def get(self, assignment_id: int) -> dict[str, Any]:
        """One application assignment."""
        return _views([assignments.require_app_assignment(assignment_id)])[0]

    @blp.arguments(UntilUpdate)
    @blp.response(200, AppAssignmentSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such assignment.")
    def patch(self, args: dict[str, Any], assignment_id: int) -> dict[str, Any]:
        """Set or clear when the assignment ends; an ended one runs again until the new end."""
        assignments.update_app_assignment(assignment_id, until=args["until"], actor=caller())
        db.session.commit()
        return _views([assignments.require_app_assignment(assignment_id)])[0]

    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema, description="No such assignment.")
    def delete(self, assignment_id: int) -> None:
        """Take an application back from a user or group."""
        found = _views([assignments.require_app_assignment(assignment_id)])[0]
        # The service names an assignment by its application and principal: the same event as from the CLI.
        assignments.unassign_app(found["app"], found["principal"], actor=caller())
        db.session.commit()
