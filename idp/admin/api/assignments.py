"""/api/v1/assignments: a permission set for a user or a group in one account, or in every account of an OU
and the OUs inside it, until an optional end."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import marshmallow as ma
from flask.views import MethodView
from sqlalchemy import or_, select

from idp import clock
from idp.access import accounts, assignments, permission_sets
from idp.access.assignments import AssignmentInfo
from idp.admin.api.base import ErrorSchema, PageArgs, blueprint, caller, page_of, page_schema
from idp.errors import BadRequest
from idp.store import Assignment

blp = blueprint("assignments", "/assignments",
                "Assignments: who gets which permission set in which account or OU, and until when.")

_ACCOUNT_ID = ma.validate.Regexp(r"^[0-9]{12}$", error="an AWS account id is exactly 12 digits")
_PRINCIPAL = ("user:NAME, group:NAME, or a bare name (a user, else a known group); group:NAME for a directory "
              "group nobody has signed in with yet")


def _until(text: str) -> datetime:
    """An end as ``idp assign --until`` takes it, but a time must name its zone."""
    text = text.strip()
    if len(text) != 10 and _naive(text):
        raise ma.ValidationError("a time needs a zone, e.g. 2027-03-31T18:00:00Z", "until")
    try:
        return assignments.parse_until(text, clock.now())
    except BadRequest as exc:
        raise ma.ValidationError(exc.message, "until") from None


def _naive(text: str) -> bool:
    try:
        return datetime.fromisoformat(text).tzinfo is None
    except ValueError:
        return False  # not a time at all: parse_until says so


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
    until = ma.fields.String(load_default=None, allow_none=True, validate=ma.validate.Length(min=1, max=64), metadata={
        "description": "an ISO date (the assignment works through that day, UTC) or an ISO time with a zone; "
                       "null or absent: no end"})

    @ma.validates_schema
    def _one_target(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("account" in data) == ("ou" in data):
            message = ["give exactly one of account and ou"]
            raise ma.ValidationError({"account": message, "ou": message})

    @ma.post_load
    def _parse(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {**data, "until": _until(data["until"]) if data["until"] is not None else None}


class AssignmentQuery(PageArgs):
    principal = ma.fields.String(validate=ma.validate.Length(min=1, max=300), metadata={"description": _PRINCIPAL})
    permission_set = ma.fields.String(validate=ma.validate.Length(min=1, max=32))
    account = ma.fields.String(validate=_ACCOUNT_ID, metadata={"description": "made in this account"})
    ou = ma.fields.String(validate=ma.validate.Length(min=1, max=128), metadata={"description": "made in this OU"})
    active = ma.fields.Boolean(metadata={"description": "true: only those not ended; false: only ended ones"})


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
        query = select(Assignment).order_by(Assignment.id)
        if "principal" in args:
            query = query.where(assignments.resolve_principal(args["principal"]).matches(Assignment))
        if "permission_set" in args:
            pset = permission_sets.require_permission_set(args["permission_set"])
            query = query.where(Assignment.permission_set_id == pset.id)
        if "account" in args:
            query = query.where(Assignment.account_id == accounts.require_account(args["account"]).id)
        if "ou" in args:
            query = query.where(Assignment.ou_id == accounts.require_ou(args["ou"]).id)
        if "active" in args:
            running = or_(Assignment.until.is_(None), Assignment.until > now)
            query = query.where(running if args["active"] else ~running)
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

    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema, description="No such assignment.")
    def delete(self, assignment_id: int) -> None:
        """Take the assignment back."""
        assignments.unassign_by_id(assignment_id, actor=caller())
