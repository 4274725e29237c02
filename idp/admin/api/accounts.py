"""/api/v1/accounts: the AWS accounts users open through the bridge, each in an OU or directly under the root."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView
from sqlalchemy import select

from idp.access import accounts
from idp.access.accounts import AccountChanges
from idp.admin.api.base import ErrorSchema, PageArgs, blueprint, caller, page_of, page_schema
from idp.store import Account

blp = blueprint("accounts", "/accounts", "AWS accounts, opened through permission sets assigned in them.")

_ACCOUNT_ID = ma.validate.Regexp(r"^[0-9]{12}$", error="an AWS account id is exactly 12 digits")
_OU = ma.validate.Length(min=1, max=128)
_URL = ma.validate.Length(min=1, max=2048)
_SIGNIN_URL = "an AWS sign-in SAML endpoint, e.g. https://us-east-1.signin.aws.amazon.com/saml"


class AccountSchema(ma.Schema):
    account_id = ma.fields.String(required=True, metadata={"description": "AWS's 12 digits"})
    name = ma.fields.String(required=True)
    ou = ma.fields.String(required=True, allow_none=True,
                          metadata={"description": "the OU it is in; null: directly under the root"})
    ou_path = ma.fields.String(required=True, metadata={"description": '"Production/Payments", or "(root)"'})
    saml_provider_arn = ma.fields.String(required=True)
    signin_url = ma.fields.String(required=True, allow_none=True,
                                  metadata={"description": "null: the global https://signin.aws.amazon.com/saml"})


class AccountCreate(ma.Schema):
    account_id = ma.fields.String(required=True, validate=_ACCOUNT_ID)
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=255))
    saml_provider_arn = ma.fields.String(required=True, validate=_URL, metadata={
        "description": "the IAM identity provider trusting the bridge: arn:aws:iam::ACCOUNT_ID:saml-provider/NAME"})
    ou = ma.fields.String(load_default=None, allow_none=True, validate=_OU,
                          metadata={"description": "the OU to put it in; null or absent: the root"})
    signin_url = ma.fields.String(load_default=None, allow_none=True, validate=_URL,
                                  metadata={"description": _SIGNIN_URL + "; null or absent: the global one"})


class AccountUpdate(ma.Schema):
    name = ma.fields.String(validate=ma.validate.Length(min=1, max=255))
    saml_provider_arn = ma.fields.String(validate=_URL)
    ou = ma.fields.String(allow_none=True, validate=_OU, metadata={
        "description": "move it to this OU (it leaves the old OU's assignments, gains the new one's); null: the root"})
    signin_url = ma.fields.String(allow_none=True, validate=_URL,
                                  metadata={"description": _SIGNIN_URL + "; null: the global one"})


class AccountQuery(PageArgs):
    ou = ma.fields.String(validate=_OU, metadata={"description": "only accounts in this OU or in an OU inside it"})


def _items(rows: list[Account]) -> list[dict[str, Any]]:
    paths = accounts.ou_paths()
    return [{"account_id": a.account_id, "name": a.name,
             "ou": paths[a.ou_id].rpartition("/")[2] if a.ou_id is not None else None,
             "ou_path": paths[a.ou_id] if a.ou_id is not None else accounts.ROOT,
             "saml_provider_arn": a.saml_provider_arn, "signin_url": a.signin_url} for a in rows]


def _one(account: Account) -> dict[str, Any]:
    return _items([account])[0]


@blp.route("")
class Accounts(MethodView):
    @blp.arguments(AccountQuery, location="query")
    @blp.response(200, page_schema(AccountSchema))
    @blp.alt_response(404, schema=ErrorSchema, description="No such OU.")
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """The accounts, by name."""
        query = select(Account).order_by(Account.name, Account.account_id)
        if "ou" in args:
            query = query.where(Account.ou_id.in_(accounts.ou_and_below(args["ou"])))
        page = page_of(query, args)
        page["items"] = _items(page["items"])
        return page

    @blp.arguments(AccountCreate)
    @blp.response(201, AccountSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such OU.")
    @blp.alt_response(409, schema=ErrorSchema, description="The account exists.")
    def post(self, args: dict[str, Any]) -> dict[str, Any]:
        """Add an account."""
        return _one(accounts.add_account(args.pop("account_id"), **args, actor=caller()))


@blp.route("/<account_id>")
class AccountItem(MethodView):
    @blp.response(200, AccountSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such account.")
    def get(self, account_id: str) -> dict[str, Any]:
        """One account."""
        return _one(accounts.require_account(account_id))

    @blp.arguments(AccountUpdate)
    @blp.response(200, AccountSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such account, or no such OU.")
    def patch(self, args: dict[str, Any], account_id: str) -> dict[str, Any]:
        """Change an account's name, identity provider, sign-in endpoint or OU; what is not given stays."""
        # The service takes "" for "the root" and "the global endpoint".
        changes = AccountChanges(**{k: "" if v is None else v for k, v in args.items()})
        account = accounts.require_account(account_id)
        accounts.update_account(account.account_id, changes, actor=caller())
        return _one(account)

    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema, description="No such account.")
    def delete(self, account_id: str) -> None:
        """Remove an account and the assignments made in it (those of its OUs stay)."""
        accounts.remove_account(account_id, actor=caller())
