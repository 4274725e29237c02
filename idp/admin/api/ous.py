"""/api/v1/ous: organizational units, the tree that groups AWS accounts (an assignment in an OU reaches every
account in it and in the OUs inside it)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView

from idp.access import accounts
from idp.admin.api.base import ErrorSchema, PageArgs, blueprint, caller, page_of_list, page_schema

blp = blueprint("ous", "/ous", "Organizational units: a tree of OUs that holds AWS accounts.")

_NAME = ma.validate.Length(min=1, max=128)


class OuSchema(ma.Schema):
    name = ma.fields.String(required=True)
    parent = ma.fields.String(required=True, allow_none=True,
                              metadata={"description": "the OU it is in; null: directly under the root"})
    path = ma.fields.String(required=True, metadata={"description": 'from the root down: "Production/Payments"'})
    depth = ma.fields.Integer(required=True, metadata={"description": "0: directly under the root"})
    accounts = ma.fields.Integer(required=True, metadata={"description": "accounts directly in this OU"})


class OuCreate(ma.Schema):
    name = ma.fields.String(required=True, validate=_NAME, metadata={"description": "1 to 128 characters, no '/'"})
    parent = ma.fields.String(load_default=None, allow_none=True, validate=_NAME,
                              metadata={"description": "the OU to put it in; null or absent: the root"})


class OuUpdate(ma.Schema):
    parent = ma.fields.String(allow_none=True, validate=_NAME, metadata={
        "description": "move it (with its accounts and OUs) under this OU; null: under the root"})


def _tree() -> list[dict[str, Any]]:
    """Every OU, parents before children, each with its path."""
    paths: dict[str, str] = {}
    out = []
    for node in accounts.ou_tree():
        paths[node.name] = f"{paths[node.parent]}/{node.name}" if node.parent is not None else node.name
        out.append({"name": node.name, "parent": node.parent, "path": paths[node.name], "depth": node.depth,
                    "accounts": node.accounts})
    return out


def _one(name: str) -> dict[str, Any]:
    ou = accounts.require_ou(name)
    return next(item for item in _tree() if item["name"] == ou.name)


@blp.route("")
class Ous(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, page_schema(OuSchema))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """The OUs, parents before their children, siblings by name, paged (each with its path from the root)."""
        return page_of_list(_tree(), args)

    @blp.arguments(OuCreate)
    @blp.response(201, OuSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such parent OU.")
    @blp.alt_response(409, schema=ErrorSchema, description="An OU of that name exists.")
    def post(self, args: dict[str, Any]) -> dict[str, Any]:
        """Add an OU."""
        ou = accounts.add_ou(args["name"], parent=args["parent"], actor=caller())
        return _one(ou.name)


@blp.route("/<name>")
class Ou(MethodView):
    @blp.response(200, OuSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such OU.")
    def get(self, name: str) -> dict[str, Any]:
        """One OU."""
        return _one(name)

    @blp.arguments(OuUpdate)
    @blp.response(200, OuSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such OU, or no such parent.")
    def patch(self, args: dict[str, Any], name: str) -> dict[str, Any]:
        """Move an OU, with its accounts and OUs, under another OU or the root."""
        ou = accounts.require_ou(name)
        if "parent" in args:
            accounts.move_ou(ou.name, parent=args["parent"], actor=caller())
        return _one(ou.name)

    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema, description="No such OU.")
    @blp.alt_response(409, schema=ErrorSchema, description="The OU still holds accounts or OUs.")
    def delete(self, name: str) -> None:
        """Remove an empty OU; the assignments in it go with it."""
        accounts.remove_ou(name, actor=caller())
