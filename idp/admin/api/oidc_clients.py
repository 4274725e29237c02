"""/api/v1/oidc-clients: OpenID Connect clients, registered, changed, removed and given a new secret through
:mod:`idp.oidc.clients` like the CLI's. A secret is in the answer that makes it (create, rotate) and nowhere
else: only its digest is stored."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import marshmallow as ma
from flask.views import MethodView
from sqlalchemy import select

from idp.access import assignments
from idp.access.claims import ROLES, SOURCES
from idp.admin.api.base import ErrorSchema, PageArgs, StrictBoolean, blueprint, caller, page_of, page_schema
from idp.admin.api.service_providers import printable
from idp.extensions import db
from idp.oidc import clients
from idp.store import OidcClient
from idp.store.oidc import PUBLIC_AUTH_METHOD

blp = blueprint("oidc_clients", "/oidc-clients",
                "OpenID Connect clients: register one (its secret is shown once), change, rotate the secret, remove.")

_URI = ma.fields.String(validate=ma.validate.Length(min=1, max=2048))


class ClaimRuleSchema(ma.Schema):
    attribute = ma.fields.String(required=True, validate=ma.validate.OneOf([*SOURCES, ROLES]),
                                 metadata={"description": "our attribute released as the claim `name`"})
    name = ma.fields.String(required=True, validate=[ma.validate.Length(min=1, max=255), printable])
    scope = ma.fields.String(validate=ma.validate.OneOf(clients.SCOPES), metadata={
        "description": "released when this scope is granted (default profile)"})
    roles = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.List(ma.fields.String()), metadata={
        "description": "for attribute `roles`: group name → the roles its members get"})


class ClientFieldsSchema(ma.Schema):
    """A client's settings; on change, what is left out stays as it is."""

    name = ma.fields.String(validate=[ma.validate.Length(min=1, max=255), printable])
    redirect_uris = ma.fields.List(_URI, validate=ma.validate.Length(max=64),
                                   metadata={"description": "matched exactly; needed by authorization_code"})
    post_logout_redirect_uris = ma.fields.List(_URI, validate=ma.validate.Length(max=64))
    public = StrictBoolean(metadata={
        "description": "a client that cannot keep a secret (SPA, native app): PKCE, no secret; set at creation"})
    grant_types = ma.fields.List(ma.fields.String(validate=ma.validate.OneOf(clients.GRANT_TYPES)), metadata={
        "description": "empty or left out on create: authorization_code and refresh_token"})
    scopes = ma.fields.List(ma.fields.String(validate=ma.validate.OneOf(clients.SCOPES)),
                            metadata={"description": "empty or left out on create: all"})
    auth_method = ma.fields.String(
        validate=ma.validate.OneOf([*clients.AUTH_METHODS, PUBLIC_AUTH_METHOD]),
        metadata={"description": "token endpoint authentication (default client_secret_basic; none if public)"})
    jwks = ma.fields.Dict(allow_none=True, metadata={"description": "the client's public keys, for private_key_jwt"})
    id_token_alg = ma.fields.String(validate=ma.validate.OneOf(clients.ID_TOKEN_ALGS))
    first_party = StrictBoolean(metadata={"description": "our own application: no consent screen"})
    claim_map = ma.fields.List(ma.fields.Nested(ClaimRuleSchema), metadata={
        "description": "what the client gets as claims; left out on create: the standard claims"})
    open_to_all = StrictBoolean(metadata={
        "description": "every signed-in user may use the client; otherwise only those it is assigned to"})
    login_url = ma.fields.String(allow_none=True, validate=ma.validate.Length(min=1, max=2048), metadata={
        "description": "where the portal starts a sign-in to the client (https, or http on loopback)"})
    access_token_format = ma.fields.String(validate=ma.validate.OneOf(clients.ACCESS_TOKEN_FORMATS), metadata={
        "description": "opaque (default), or jwt: RFC 9068 access tokens signed RS256, audience the client id"})
    require_pkce = StrictBoolean(metadata={
        "description": "a confidential client must send a PKCE code_challenge too (a public one always must)"})


class ClientCreateSchema(ClientFieldsSchema):
    name = ma.fields.String(required=True, validate=[ma.validate.Length(min=1, max=255), printable])


class ClientSchema(ma.Schema):
    client_id = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    public = ma.fields.Boolean(required=True)
    auth_method = ma.fields.String(required=True)
    redirect_uris = ma.fields.List(ma.fields.String(), required=True)
    post_logout_redirect_uris = ma.fields.List(ma.fields.String(), required=True)
    grant_types = ma.fields.List(ma.fields.String(), required=True)
    scopes = ma.fields.List(ma.fields.String(), required=True)
    jwks = ma.fields.Dict(allow_none=True)
    id_token_alg = ma.fields.String(required=True)
    first_party = ma.fields.Boolean(required=True)
    claim_map = ma.fields.List(ma.fields.Nested(ClaimRuleSchema), required=True)
    open_to_all = ma.fields.Boolean(required=True)
    login_url = ma.fields.String(allow_none=True)
    access_token_format = ma.fields.String(required=True)
    require_pkce = ma.fields.Boolean(required=True)
    created_at = ma.fields.AwareDateTime(allow_none=True)
    updated_at = ma.fields.AwareDateTime(allow_none=True)


class SecretSchema(ma.Schema):
    client_secret = ma.fields.String(allow_none=True, metadata={
        "description": "shown in this answer only; null for a client without a secret"})


class RegisteredClientSchema(ClientSchema, SecretSchema):
    pass


class NewSecretSchema(SecretSchema):
    client_id = ma.fields.String(required=True)


def _given(args: dict[str, Any]) -> dict[str, Any]:
    """The arguments as ClientOptions takes them (tuples, not lists)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}


@blp.route("")
class Clients(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, page_schema(ClientSchema))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """The registered clients, by name."""
        return page_of(select(OidcClient).order_by(OidcClient.name, OidcClient.client_id), args)

    @blp.arguments(ClientCreateSchema)
    @blp.response(201, RegisteredClientSchema)
    def post(self, args: dict[str, Any]) -> dict[str, Any]:
        """Register a client; its secret is in this answer and never again."""
        registered = clients.add(clients.ClientOptions(**_given(args)), caller())
        db.session.commit()
        row = clients.get_or_404(registered.client_id)
        return {**{name: getattr(row, name) for name in ClientSchema().fields},
                "client_secret": registered.client_secret}


@blp.route("/<client_id>")
class ClientItem(MethodView):
    @blp.response(200, ClientSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such client.")
    def get(self, client_id: str) -> OidcClient:
        """One client's settings (never its secret: only a digest of it is stored)."""
        return clients.get_or_404(client_id)

    @blp.arguments(ClientFieldsSchema)
    @blp.response(200, ClientSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such client.")
    def patch(self, args: dict[str, Any], client_id: str) -> OidcClient:
        """Change a client's settings; what is left out stays as it is."""
        client = clients.get_or_404(client_id)
        open_to_all = args.pop("open_to_all", None)
        if open_to_all is not None:
            assignments.resolve_app(client_id)  # refused before anything changes
        # One commit for both parts (a failure between two would keep half the PATCH).
        clients.update(client_id, replace(clients.options_of(client), **_given(args)), caller(), commit=False)
        if open_to_all is not None:
            # Who may use an app changes through the access service, as from the CLI and the UI.
            assignments.set_open_to_all(client_id, open_to_all, actor=caller())
        db.session.commit()
        return client

    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema, description="No such client.")
    def delete(self, client_id: str) -> None:
        """Unregister a client; its codes and consents go, its tokens are revoked."""
        clients.remove(client_id, caller())
        db.session.commit()


@blp.route("/<client_id>/secret", methods=["POST"])
@blp.response(200, NewSecretSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such client.")
@blp.alt_response(422, schema=ErrorSchema, description="The client does not authenticate with a secret.")
def rotate_secret(client_id: str) -> clients.Registered:
    """Give a client a new secret, in this answer only; the old one stops working at once."""
    registered = clients.rotate_secret(client_id, caller())
    db.session.commit()
    return registered
