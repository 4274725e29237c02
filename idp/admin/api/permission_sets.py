"""/api/v1/permission-sets: what a user gets in an account (an IAM role, for how long, where the console opens)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView
from sqlalchemy import select

from idp.access import permission_sets
from idp.access.permission_sets import PermissionSetSpec
from idp.admin.api.base import ErrorSchema, PageArgs, StrictBoolean, blueprint, caller, page_of, page_schema
from idp.store import PermissionSet

blp = blueprint("permission_sets", "/permission-sets",
                "Permission sets: an IAM role and a session length, assigned to users and groups in accounts.",
                fields={"session_hours": "session_duration_hours"})


class PermissionSetSchema(ma.Schema):
    name = ma.fields.String(required=True)
    description = ma.fields.String(required=True, allow_none=True)
    session_duration_hours = ma.fields.Integer(required=True)
    role_name = ma.fields.String(required=True, metadata={"description": "the IAM role assumed in each account"})
    managed_policy_arns = ma.fields.List(ma.fields.String(), required=True)
    inline_policy = ma.fields.Dict(required=True, allow_none=True)
    relay_state = ma.fields.String(required=True, allow_none=True)
    mfa_required = ma.fields.Boolean(required=True)


class PermissionSetUpdate(ma.Schema):
    """The settings shared by create and update; null (or an empty list) clears a setting."""

    session_duration_hours = ma.fields.Integer(strict=True, validate=ma.validate.Range(min=1, max=12),
                                               metadata={"description": "how long a console session lasts"})
    role_name = ma.fields.String(validate=ma.validate.Length(min=1, max=64))
    description = ma.fields.String(allow_none=True, validate=ma.validate.Length(max=700))
    managed_policy_arns = ma.fields.List(ma.fields.String(validate=ma.validate.Length(min=1, max=2048)),
                                         allow_none=True, validate=ma.validate.Length(max=50), metadata={
                                             "description": "for whoever provisions the role; replaces the list"})
    inline_policy = ma.fields.Dict(allow_none=True, metadata={
        "description": "an IAM policy document, for whoever provisions the role"})
    relay_state = ma.fields.String(allow_none=True, validate=ma.validate.Length(max=2048), metadata={
        "description": "where AWS opens after sign-in, e.g. https://console.aws.amazon.com/ec2/"})
    mfa_required = StrictBoolean(metadata={
        "description": "grant it only to a sign-in with MFA (none has MFA yet: nobody gets it)"})


class PermissionSetCreate(PermissionSetUpdate):
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=32), metadata={
        "description": "1 to 32 of letters, digits and +=,.@_-"})
    session_duration_hours = ma.fields.Integer(required=True, strict=True, validate=ma.validate.Range(min=1, max=12),
                                               metadata={"description": "how long a console session lasts"})
    role_name = ma.fields.String(validate=ma.validate.Length(min=1, max=64),
                                 metadata={"description": "default: the permission set's name"})


class DeleteArgs(ma.Schema):
    force = ma.fields.Boolean(load_default=False,
                              metadata={"description": "also delete the assignments that use it"})


def _spec(args: dict[str, Any]) -> PermissionSetSpec:
    # The service's "clear" values: "" for text, () for the list, {} for the policy.
    def given(key: str, clear: Any) -> Any:
        return clear if key in args and args[key] is None else args.get(key)

    policies = given("managed_policy_arns", ())
    return PermissionSetSpec(
        session_hours=args.get("session_duration_hours"), role_name=args.get("role_name"),
        description=given("description", ""), managed_policy_arns=tuple(policies) if policies is not None else None,
        inline_policy=given("inline_policy", {}), relay_state=given("relay_state", ""),
        mfa_required=args.get("mfa_required"))


def _item(pset: PermissionSet) -> dict[str, Any]:
    return {"name": pset.name, "description": pset.description,
            "session_duration_hours": pset.session_duration_seconds // 3600, "role_name": pset.role_name,
            "managed_policy_arns": list(pset.managed_policy_arns or []), "inline_policy": pset.inline_policy,
            "relay_state": pset.relay_state, "mfa_required": pset.mfa_required}


@blp.route("")
class PermissionSets(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, page_schema(PermissionSetSchema))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """The permission sets, by name."""
        return page_of(select(PermissionSet).order_by(PermissionSet.name), args, _item)

    @blp.arguments(PermissionSetCreate)
    @blp.response(201, PermissionSetSchema)
    @blp.alt_response(409, schema=ErrorSchema, description="A permission set of that name exists.")
    def post(self, args: dict[str, Any]) -> dict[str, Any]:
        """Add a permission set."""
        return _item(permission_sets.add_permission_set(args["name"], _spec(args), actor=caller()))


@blp.route("/<name>")
class PermissionSetItem(MethodView):
    @blp.response(200, PermissionSetSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such permission set.")
    def get(self, name: str) -> dict[str, Any]:
        """One permission set."""
        return _item(permission_sets.require_permission_set(name))

    @blp.arguments(PermissionSetUpdate)
    @blp.response(200, PermissionSetSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such permission set.")
    def patch(self, args: dict[str, Any], name: str) -> dict[str, Any]:
        """Change the given settings; the others stay."""
        permission_sets.update_permission_set(name, _spec(args), actor=caller())
        return _item(permission_sets.require_permission_set(name))

    @blp.arguments(DeleteArgs, location="query")
    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema, description="No such permission set.")
    @blp.alt_response(409, schema=ErrorSchema, description="Assignments use it, and force was not given.")
    def delete(self, args: dict[str, Any], name: str) -> None:
        """Delete a permission set; refused while assignments use it, unless force=true, which deletes them too."""
        permission_sets.delete_permission_set(name, force=args["force"], actor=caller())
