"""GET /api/v1/access/{username}: a user's effective access as the one decision answers it, the same as
``idp access show --json``."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView

from idp.access import assignments
from idp.admin.api.base import ErrorSchema, blueprint

blp = blueprint("access", "/access", "Effective access: what a user may open now, and where each grant comes from.")


class SourceSchema(ma.Schema):
    via = ma.fields.String(required=True, metadata={"description": '"user alice", "group engineers" or "everyone"'})
    scope = ma.fields.String(required=True, metadata={
        "description": '"account 111122223333", "ou Production", "app" or "open to all"'})
    until = ma.fields.AwareDateTime(required=True, allow_none=True)


class RoleSchema(ma.Schema):
    account_id = ma.fields.String(required=True)
    account_name = ma.fields.String(required=True)
    permission_set = ma.fields.String(required=True)
    role_arn = ma.fields.String(required=True)
    provider_arn = ma.fields.String(required=True)
    signin_url = ma.fields.String(required=True, allow_none=True)
    relay_state = ma.fields.String(required=True, allow_none=True)
    session_seconds = ma.fields.Integer(required=True, metadata={
        "description": "the permission set's duration, cut to what is left of the assignment"})
    until = ma.fields.AwareDateTime(required=True, allow_none=True)
    sources = ma.fields.List(ma.fields.Nested(SourceSchema), required=True)


class AppSchema(ma.Schema):
    kind = ma.fields.String(required=True, validate=ma.validate.OneOf(["saml", "oidc"]))
    key = ma.fields.String(required=True, metadata={"description": "the SP's entity ID or the client's client_id"})
    name = ma.fields.String(required=True)
    until = ma.fields.AwareDateTime(required=True, allow_none=True)
    sources = ma.fields.List(ma.fields.Nested(SourceSchema), required=True)
    login_url = ma.fields.String(required=True, allow_none=True)


class AccessSchema(ma.Schema):
    user = ma.fields.String(required=True)
    source = ma.fields.String(required=True, metadata={"description": "the directory the user comes from"})
    enabled = ma.fields.Boolean(required=True, metadata={"description": "false: the user signs in nowhere"})
    groups = ma.fields.List(ma.fields.String(), required=True)
    roles = ma.fields.List(ma.fields.Nested(RoleSchema), required=True)
    apps = ma.fields.List(ma.fields.Nested(AppSchema), required=True)
    with_mfa_only = ma.fields.List(ma.fields.Nested(RoleSchema), required=True, metadata={
        "description": "roles held through a permission set that requires MFA, granted only to an MFA sign-in"})


@blp.route("/<username>")
class UserAccess(MethodView):
    @blp.response(200, AccessSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such user.")
    def get(self, username: str) -> dict[str, Any]:
        """Every account role and application the user may open now."""
        return assignments.describe_access(assignments.effective_access(username))
