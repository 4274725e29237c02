"""/api/v1/users: the people of the built-in directory, and the shadow rows of directory (LDAP, AD) users, which
the directory owns: read-only here (:func:`idp.authn.directory.require_local`), as in the admin UI."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView

from idp.admin.api.base import ErrorSchema, PageArgs, StrictBoolean, blueprint, caller, page_of, page_schema
from idp.authn import directory, passwords
from idp.store import User

blp = blueprint("users", "/users", "People: local users, and directory users as the bridge last saw them.")

USERNAME = ma.validate.Regexp(f"^{directory.USERNAME.pattern}$", error="Use lower-case letters, digits and . _ @ + - "
                              "(starting with a letter or digit), at most 255 characters.")
GROUP_NAME = ma.validate.Regexp(f"^{directory.GROUP_NAME.pattern}$", error="Use letters, digits and . _ - (starting "
                                "with a letter or digit), at most 255 characters.")
_EMAIL = [ma.validate.Length(max=320), ma.validate.Regexp(f"^{directory.EMAIL.pattern}$",
                                                           error="Not an email address.")]
_NAME = ma.validate.Length(max=255)
_PASSWORD = ma.validate.Length(min=passwords.MIN_LENGTH, max=passwords.MAX_LENGTH)
USERNAME_IN_PATH = {"in": "path", "name": "username", "description": "a username (any case)", "example": "alice"}


class UserSchema(ma.Schema):
    username = ma.fields.String(required=True)
    email = ma.fields.String(required=True, allow_none=True)
    given_name = ma.fields.String(required=True, allow_none=True)
    family_name = ma.fields.String(required=True, allow_none=True)
    display_name = ma.fields.String(required=True, allow_none=True)
    enabled = ma.fields.Boolean(required=True, metadata={"description": "false: cannot sign in"})
    source = ma.fields.String(required=True, metadata={
        "description": '"local": the built-in directory; else the directory the user signs in with, which owns '
                       "their profile and password"})
    has_password = ma.fields.Boolean(required=True, metadata={"description": "a local password is set"})
    groups = ma.fields.List(ma.fields.String(), required=True, metadata={"description": "local groups"})
    directory_groups = ma.fields.List(ma.fields.String(), required=True, metadata={
        "description": "the groups the user's directory reported at their last sign-in"})
    created_at = ma.fields.AwareDateTime(required=True)
    updated_at = ma.fields.AwareDateTime(required=True)


class UserQuery(PageArgs):
    q = ma.fields.String(validate=ma.validate.Length(max=320), metadata={
        "description": "part of the username or email address (any case)"})
    source = ma.fields.String(validate=ma.validate.Length(max=64), metadata={
        "description": '"local", or the name of a directory'})


class _Profile(ma.Schema):
    email = ma.fields.String(allow_none=True, validate=_EMAIL)
    given_name = ma.fields.String(allow_none=True, validate=_NAME)
    family_name = ma.fields.String(allow_none=True, validate=_NAME)
    display_name = ma.fields.String(allow_none=True, validate=_NAME)


class UserCreate(_Profile):
    username = ma.fields.String(required=True, validate=USERNAME)
    password = ma.fields.String(load_only=True, validate=_PASSWORD, metadata={
        "description": "stored hashed, never shown; absent: the user cannot sign in with a password (yet)"})
    groups = ma.fields.List(ma.fields.String(validate=GROUP_NAME), load_default=list,
                            metadata={"description": "local groups to put the user in"})


class UserUpdate(_Profile):
    enabled = StrictBoolean(metadata={"description": "false ends the user's sessions at once"})
    password = ma.fields.String(load_only=True, validate=_PASSWORD, metadata={"description": "a new password"})


def user_dict(user: User) -> dict[str, Any]:
    return {
        "username": user.username, "email": user.email, "given_name": user.given_name,
        "family_name": user.family_name, "display_name": user.display_name, "enabled": user.enabled,
        "source": user.source, "has_password": user.password_hash is not None,
        "groups": [g.name for g in user.groups], "directory_groups": [str(g) for g in user.external_groups or ()],
        "created_at": user.created_at, "updated_at": user.updated_at,
    }


@blp.route("")
class Users(MethodView):
    @blp.arguments(UserQuery, location="query")
    @blp.response(200, page_schema(UserSchema))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Users by username, paged."""
        return page_of(directory.search_users(q=args.get("q"), source=args.get("source")), args, user_dict)

    @blp.arguments(UserCreate)
    @blp.response(201, UserSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such group (in `groups`).")
    @blp.alt_response(409, schema=ErrorSchema, description="A user of that name exists.")
    def post(self, args: dict[str, Any]) -> dict[str, Any]:
        """Add a local user."""
        user = directory.create_user(args.pop("username"), password=args.pop("password", None), actor=caller(),
                                     **args)
        return user_dict(user)


@blp.route("/<username>", parameters=[USERNAME_IN_PATH])
class OneUser(MethodView):
    @blp.response(200, UserSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such user.")
    def get(self, username: str) -> dict[str, Any]:
        """One user."""
        return user_dict(directory.require_user(username))

    @blp.arguments(UserUpdate)
    @blp.response(200, UserSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such user.")
    @blp.alt_response(409, schema=ErrorSchema, description="A directory user: change them in their directory.")
    def patch(self, args: dict[str, Any], username: str) -> dict[str, Any]:
        """Change a local user's profile, password or whether they may sign in.

        Only the fields given change (null clears a profile field), all or nothing. A directory user is their
        directory's (409).
        """
        return user_dict(directory.update_user(username, actor=caller(), **args))

    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema, description="No such user.")
    @blp.alt_response(409, schema=ErrorSchema, description="A directory user: their directory owns them.")
    def delete(self, username: str) -> None:
        """Delete a local user and end their sessions."""
        directory.delete_user(username, actor=caller())
