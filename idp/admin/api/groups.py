"""/api/v1/groups: the built-in directory's groups and their members (local users or directory users alike).
A directory's own groups have no row here: they come with each user's sign-in (``directory_groups``)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView
from sqlalchemy import func, select

from idp.admin.api.base import ErrorSchema, PageArgs, blueprint, caller, page_of, page_schema
from idp.admin.api.users import GROUP_NAME, USERNAME_IN_PATH
from idp.authn import directory
from idp.store import Group

blp = blueprint("groups", "/groups", "Local groups and their members.")

_NAME_IN_PATH = {"in": "path", "name": "name", "description": "a group name (exact case)", "example": "staff"}


class GroupSchema(ma.Schema):
    name = ma.fields.String(required=True)
    description = ma.fields.String(required=True, allow_none=True)
    members = ma.fields.List(ma.fields.String(), required=True, metadata={"description": "usernames"})
    created_at = ma.fields.AwareDateTime(required=True)


class GroupQuery(PageArgs):
    q = ma.fields.String(validate=ma.validate.Length(max=255), metadata={"description": "part of the name (any case)"})


_DESCRIPTION = ma.validate.Length(max=1024)


class GroupCreate(ma.Schema):
    name = ma.fields.String(required=True, validate=GROUP_NAME, metadata={
        "description": "unique regardless of case"})
    description = ma.fields.String(allow_none=True, validate=_DESCRIPTION)


class GroupUpdate(ma.Schema):
    description = ma.fields.String(required=True, allow_none=True, validate=_DESCRIPTION,
                                   metadata={"description": "null or empty: none"})


def _group(group: Group) -> dict[str, Any]:
    return {"name": group.name, "description": group.description, "members": [u.username for u in group.members],
            "created_at": group.created_at}


@blp.route("")
class Groups(MethodView):
    @blp.arguments(GroupQuery, location="query")
    @blp.response(200, page_schema(GroupSchema))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Groups by name, paged."""
        query = select(Group).order_by(Group.name)
        if "q" in args:
            query = query.where(func.lower(Group.name).contains(args["q"].lower(), autoescape=True))
        return page_of(query, args, _group)

    @blp.arguments(GroupCreate)
    @blp.response(201, GroupSchema)
    @blp.alt_response(409, schema=ErrorSchema, description="A group of that name (in any case) exists.")
    def post(self, args: dict[str, Any]) -> dict[str, Any]:
        """Add a group."""
        return _group(directory.create_group(args["name"], description=args.get("description"), actor=caller()))


@blp.route("/<name>", parameters=[_NAME_IN_PATH])
class OneGroup(MethodView):
    @blp.response(200, GroupSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such group.")
    def get(self, name: str) -> dict[str, Any]:
        """One group with its members."""
        return _group(directory.require_group(name))

    @blp.arguments(GroupUpdate)
    @blp.response(200, GroupSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such group.")
    def patch(self, args: dict[str, Any], name: str) -> dict[str, Any]:
        """Change a group's description (a group is not renamed: assignments and SPs' role maps name it)."""
        return _group(directory.update_group(name, description=args["description"], actor=caller()))

    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema, description="No such group.")
    def delete(self, name: str) -> None:
        """Delete a group; its members lose it (assignments name groups, so those to this name stay)."""
        directory.delete_group(name, actor=caller())


@blp.route("/<name>/members/<username>", parameters=[_NAME_IN_PATH, USERNAME_IN_PATH])
class Membership(MethodView):
    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema, description="No such group or user.")
    def put(self, name: str, username: str) -> None:
        """Put a user in the group (nothing changes if they are in it already)."""
        directory.add_member(name, username, actor=caller())

    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema, description="No such group or user, or the user is not a member.")
    def delete(self, name: str, username: str) -> None:
        """Take a user out of the group."""
        directory.remove_member(name, username, actor=caller())
