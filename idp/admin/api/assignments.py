"""/api/v1/assignments: a permission set for a user or a group in one account, or in every account of an OU
and the OUs inside it, until an optional end."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import marshmallow as ma
from flask.views import MethodView

from idp import clock
from idp.access import assignments
from idp.access.assignments import AssignmentInfo
from idp.admin.api.base import ErrorSchema, PageArgs, blueprint, caller, page_of, page_schema
from idp.errors import BadRequest

blp = blueprint("assignments", "/assignments",
                "Assignments: who gets which permission set in which account or OU, and until when.")

_ACCOUNT_ID = ma.validate.Regexp(r"^[0-9]{12}$", error="an AWS account id is exactly 12 digits")
_PRINCIPAL = ("user:NAME, group:NAME, or a bare name (a user, else a known group); group:NAME for a directory "
              "group nobody has signed in with yet")


class Until(ma.fields.Field[datetime]):
    """An assignment's end, read as :func:`idp.access.assignments.parse_until` reads it for the CLI and the UI,
    except that a time must name its zone; null: no end. Also the app assignments' ``until``."""

    def __init__(self, **kwargs: Any) -> None:
        # Documented as the text it is; checked here, since validators would see the parsed datetime.
        super().__init__(allow_none=True, metadata={
            "type": "string", "minLength": 1, "maxLength": 64,
            "description": "an ISO date (the assignment works through that day, UTC) or an ISO time with a zone "
                           "(2027-03-31T18:00:00Z); null: no end"}, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str) or not 1 <= len(value) <= 64:
            raise ma.ValidationError("an ISO date or time: text of 1 to 64 characters")
        try:
            return assignments.parse_until(value, clock.now(), require_zone=True)
        except BadRequest as exc:
            raise ma.ValidationError(exc.message) from None


class UntilUpdate(ma.Schema):
    until = Until(required=True)


class AssignmentSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    principal = ma.fields.String(required=True, metadata={"description": "user:NAME or group:NAME"})
    permission_set = ma.fields.String(required=True)
    account = ma.fields.String(required=True, allow_none=True,
                               metadata={"description": "the account's 12 digits; null for an OU's assignment"})
    ou = ma.fields.String(required=True, allow_none=True,
                          metadata={"description": "the OU; null for an account's assignment"})
    until = ma.fields.AwareDateTime(required=True, allow_none=True, metadata={"description": "null: no end"})
    active = ma.fields.Boolean(required=True, metadata={"description": "false once its end has passed"})
    created_by = ma.fields.String(required=True)
    created_at = ma.fields.AwareDateTime(required=True)


class AssignmentCreate(ma.Schema):
    principal = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=300),
                                 metadata={"description": _PRINCIPAL})
    permission_set = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=32))
    account = ma.fields.String(validate=_ACCOUNT_ID, metadata={"description": "give this or ou, not both"})
    ou = ma.fields.String(validate=ma.validate.Length(min=1, max=128), metadata={
        "description": "every account in it and in the OUs inside it, those added later too"})
    until = Until(load_default=None)

    @ma.validates_schema
    def _one_target(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("account" in data) == ("ou" in data):
            message = ["give exactly one of account and ou"]
            raise ma.ValidationError({"account": message, "ou": message})


class AssignmentQuery(PageArgs):
    principal = ma.fields.String(validate=ma.validate.Length(min=1, max=300), metadata={"description": _PRINCIPAL})
    permission_set = ma.fields.String(validate=ma.validate.Length(min=1, max=32))
    account = ma.fields.String(validate=_ACCOUNT_ID, metadata={"description": "made in this account"})
    ou = ma.fields.String(validate=ma.validate.Length(min=1, max=128), metadata={"description": "made in this OU"})
    active = ma.fields.Boolean(metadata={"description": "true: only those not ended; false: only ended ones"})


_FILTERS = ("principal", "permission_set", "account", "ou", "active")


def _item(info: AssignmentInfo, now: datetime) -> dict[str, Any]:
    who = info.who
    return {"id": info.id,
            "principal": f"group:{who.group_name}" if who.group_name is not None else f"user:{who.username}",
            "permission_set": info.permission_set, "account": info.account, "ou": info.ou, "until": info.until,
            "active": info.until is None or info.until > now, "created_by": info.created_by,
            "created_at": info.created_at}


def _one(assignment_id: int) -> dict[str, Any]:
    return _item(assignments.describe_assignments([assignments.require_assignment(assignment_id)])[0], clock.now())


@blp.route("")
class Assignments(MethodView):
    @blp.arguments(AssignmentQuery, location="query")
    @blp.response(200, page_schema(AssignmentSchema))
    @blp.alt_response(404, schema=ErrorSchema, description="No such user, group, permission set, account or OU.")
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """The assignments, oldest first."""
        now = clock.now()
        query = assignments.assignment_query(now=now, **{k: args[k] for k in _FILTERS if k in args})
        page = page_of(query, args)
        page["items"] = [_item(info, now) for info in assignments.describe_assignments(page["items"])]
        return page

    @blp.arguments(AssignmentCreate)
    @blp.response(201, AssignmentSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such user, permission set, account or OU.")
    @blp.alt_response(409, schema=ErrorSchema, description="The same assignment exists and has not ended.")
    def post(self, args: dict[str, Any]) -> dict[str, Any]:
        """Give a user or group a permission set in an account, or in every account of an OU."""
        done = assignments.assign(args["principal"], args["permission_set"], account=args.get("account"),
                                  ou=args.get("ou"), until=args["until"], actor=caller())
        assert done.id is not None
        return _one(done.id)


@blp.route("/<int(min=1, max=2147483647):assignment_id>")  # what the id column can hold
class AssignmentItem(MethodView):
    @blp.response(200, AssignmentSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such assignment.")
    def get(self, assignment_id: int) -> dict[str, Any]:
        """One assignment."""
        return _one(assignment_id)

    @blp.arguments(UntilUpdate)
    @blp.response(200, AssignmentSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such assignment.")
    def patch(self, args: dict[str, Any], assignment_id: int) -> dict[str, Any]:
        """Set or clear the assignment's end; an ended one runs again until the new end."""
        assignments.update_assignment(assignment_id, until=args["until"], actor=caller())
        return _one(assignment_id)

    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema, description="No such assignment.")
    def delete(self, assignment_id: int) -> None:
        """Take the assignment back."""
        assignments.unassign_by_id(assignment_id, actor=caller())
