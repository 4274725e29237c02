"""/api/v1/service-providers: SAML service providers, registered from their metadata (XML, or a URL it is
fetched from), from their URLs and certificate, or from an app preset; changed, refreshed and removed through
:mod:`idp.saml.providers` like the CLI's. An SP is named by its row id (an entity ID is no good in a path)."""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

import marshmallow as ma
from flask.views import MethodView
from sqlalchemy import select

from idp.access import assignments
from idp.access.claims import ROLES
from idp.admin.api.base import ErrorSchema, PageArgs, StrictBoolean, blueprint, caller, page_of, page_schema
from idp.extensions import db
from idp.saml import presets, providers
from idp.saml.metadata import METADATA_MAX_BYTES, NAMEID_FORMATS, MetadataError
from idp.store import ServiceProvider

blp = blueprint("service_providers", "/service-providers",
                "SAML service providers: register from metadata, a metadata URL, fields or a preset.",
                fields={"xml": "metadata_xml", "url": "metadata_url", "certificate_pem": "certificate"})

# Row ids are 32-bit integers (PostgreSQL); a larger one cannot name a row, and would not fit the query.
SP_ID = "<int(min=1, max=2147483647):sp_id>"


def http_url(description: str | None = None) -> ma.fields.Url:
    """An absolute http(s) URL (loopback and single-label hosts allowed: SPs on an intranet)."""
    return ma.fields.Url(schemes={"http", "https"}, require_tld=False, validate=ma.validate.Length(max=2048),
                         metadata={"description": description} if description else {})


class _NoControlCharacters(ma.validate.Validator):
    """Names end up in XML (metadata, assertions) and in pages: no control characters. ``regex`` is what the
    OpenAPI document shows as the field's pattern."""

    regex = re.compile(r"^[^\x00-\x1f\x7f-\x9f]*$")

    def __call__(self, value: str) -> str:
        if not self.regex.fullmatch(value):  # not match(): "$" would let a final newline through
            raise ma.ValidationError("must not contain control characters")
        return value


printable = _NoControlCharacters()


class AttributeRuleSchema(ma.Schema):
    attribute = ma.fields.String(required=True, validate=ma.validate.OneOf([*providers.ATTRIBUTES, ROLES]),
                                 metadata={"description": "our attribute released under `name`"})
    name = ma.fields.String(required=True, validate=[ma.validate.Length(min=1, max=1024), printable],
                            metadata={"description": "the attribute's name in the assertion"})
    name_format = ma.fields.String(validate=ma.validate.Length(max=255), metadata={
        "description": "basic, uri, unspecified or a NameFormat URN (default basic); answers give the URN"})
    roles = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.List(ma.fields.String()), metadata={
        "description": "for attribute `roles`: group name → the roles its members get"})


class SpOptionsSchema(ma.Schema):
    """The settings an admin may give on create and change later; left out: default (create) or unchanged."""

    name = ma.fields.String(validate=[ma.validate.Length(min=1, max=255), printable])
    nameid_format = ma.fields.String(validate=ma.validate.OneOf([*NAMEID_FORMATS, *NAMEID_FORMATS.values()]),
                                     metadata={"description": "a short name or the format's URN"})
    sign_response = StrictBoolean()
    sign_assertion = StrictBoolean()
    encrypt_assertion = StrictBoolean(metadata={"description": "needs an encryption certificate"})
    require_signed_requests = StrictBoolean(metadata={"description": "needs a signing certificate"})
    allow_sha1 = StrictBoolean()
    attribute_map = ma.fields.List(ma.fields.Nested(AttributeRuleSchema), metadata={
        "description": "replaces the whole release map: the SP gets exactly these attributes"})
    open_to_all = StrictBoolean(metadata={
        "description": "every signed-in user may use the SP; otherwise only those it is assigned to"})


# Where a new SP's metadata comes from: exactly one of these, with the fields that go with it.
_SOURCES = {"metadata_xml": (), "metadata_url": (), "entity_id": ("acs_urls", "slo_url", "certificate"),
            "preset": ("params",)}


class SpCreateSchema(SpOptionsSchema):
    metadata_xml = ma.fields.String(validate=ma.validate.Length(min=1, max=METADATA_MAX_BYTES),
                                    metadata={"description": "the SP's metadata (an md:EntityDescriptor)"})
    metadata_url = http_url("where to fetch the metadata from (and refresh it from later)")
    entity_id = ma.fields.String(validate=[ma.validate.Length(min=1, max=1024), printable],
                                 metadata={"description": "with acs_urls: an SP described by its URLs"})
    acs_urls = ma.fields.List(http_url(),
                              validate=ma.validate.Length(min=1, max=32),
                              metadata={"description": "HTTP-POST assertion consumer URLs, the default first"})
    slo_url = http_url("an HTTP-Redirect single logout URL")
    certificate = ma.fields.String(validate=ma.validate.Length(min=1, max=65536), metadata={
        "description": "the SP's certificate (PEM, or its base64 body): checks its requests, encrypts to it"})
    preset = ma.fields.String(validate=ma.validate.Length(min=1, max=64),
                              metadata={"description": "an app preset's name (GET /api/v1/presets)"})
    params = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String(),
                            metadata={"description": "the preset's parameter values"})

    @ma.validates_schema
    def _one_source(self, data: dict[str, Any], **kwargs: Any) -> None:
        given = [source for source in _SOURCES if source in data]
        if len(given) != 1:
            message = "give exactly one of metadata_xml, metadata_url, entity_id (with acs_urls) or preset"
            raise ma.ValidationError({field: [message] for field in given} if given else {"_schema": [message]})
        errors: dict[str, list[str]] = {}
        for source, companions in _SOURCES.items():
            for field in companions:
                if field in data and source not in given:
                    errors[field] = [f"goes with {source}"]
        if given == ["entity_id"] and "acs_urls" not in data:
            errors["acs_urls"] = ["an SP given by its entity_id needs at least one ACS URL"]
        if errors:
            raise ma.ValidationError(errors)


class EndpointSchema(ma.Schema):
    binding = ma.fields.String(required=True)
    location = ma.fields.String(required=True)
    index = ma.fields.Integer(allow_none=True)
    is_default = ma.fields.Boolean()


class SpSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    entity_id = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    nameid_format = ma.fields.String(required=True)
    sign_response = ma.fields.Boolean(required=True)
    sign_assertion = ma.fields.Boolean(required=True)
    encrypt_assertion = ma.fields.Boolean(required=True)
    require_signed_requests = ma.fields.Boolean(required=True)
    allow_sha1 = ma.fields.Boolean(required=True)
    attribute_map = ma.fields.List(ma.fields.Nested(AttributeRuleSchema), required=True)
    open_to_all = ma.fields.Boolean(required=True)
    metadata_source = ma.fields.String(allow_none=True, metadata={
        "description": "the URL (or file) `refresh` re-reads; null: nothing to refresh from"})
    created_at = ma.fields.AwareDateTime(allow_none=True)
    updated_at = ma.fields.AwareDateTime(allow_none=True)
    # From the metadata; absent only if stored metadata no longer parses.
    acs = ma.fields.List(ma.fields.Nested(EndpointSchema))
    slo = ma.fields.List(ma.fields.Nested(EndpointSchema))
    signing_certificates = ma.fields.List(ma.fields.String(), metadata={"description": "SHA-256 fingerprints"})
    encryption_certificates = ma.fields.List(ma.fields.String(), metadata={"description": "SHA-256 fingerprints"})
    authn_requests_signed = ma.fields.Boolean()


class RefreshedSpSchema(SpSchema):
    metadata_changed = ma.fields.Boolean(required=True)


def view(sp: ServiceProvider) -> dict[str, Any]:
    return {**providers.describe(sp), "id": sp.id, "created_at": sp.created_at, "updated_at": sp.updated_at}


_OPTIONS = {f.name for f in fields(providers.SpOptions)}


def _options(args: dict[str, Any]) -> providers.SpOptions:
    given = {k: v for k, v in args.items() if k in _OPTIONS}
    if "attribute_map" in given:
        given["attribute_map"] = tuple(given["attribute_map"])
    return providers.SpOptions(**given)


@blp.route("")
class ServiceProviders(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, page_schema(SpSchema))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """The registered service providers, by entity ID."""
        return page_of(select(ServiceProvider).order_by(ServiceProvider.entity_id), args, view)

    @blp.arguments(SpCreateSchema)
    @blp.response(201, SpSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such preset.")
    @blp.alt_response(409, schema=ErrorSchema, description="An SP with this entity ID is already registered.")
    def post(self, args: dict[str, Any]) -> dict[str, Any]:
        """Register a service provider from its metadata (XML or URL), its URLs, or a preset."""
        options = _options(args)
        if "preset" in args:
            sp = presets.register(args["preset"], args.get("params", {}), options, caller())
        elif "metadata_url" in args:
            sp = providers.add(providers.fetch_url(args["metadata_url"]), args["metadata_url"], options, caller())
        elif "metadata_xml" in args:
            sp = providers.add(_utf8(args["metadata_xml"]), None, options, caller())
        else:
            nameid = providers.resolve_nameid_format(options.nameid_format) if options.nameid_format else None
            xml = presets.sp_metadata(args["entity_id"], args["acs_urls"], display_name=options.name,
                                      nameid_format=nameid, slo_url=args.get("slo_url"),
                                      certificate_pem=args.get("certificate"))
            sp = providers.add(xml, None, options, caller())
        db.session.commit()
        return view(sp)


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which JSON can carry
        raise MetadataError("metadata_xml is not valid Unicode text", field="metadata_xml") from None


@blp.route(f"/{SP_ID}")
class ServiceProviderItem(MethodView):
    @blp.response(200, SpSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such service provider.")
    def get(self, sp_id: int) -> dict[str, Any]:
        """One service provider: settings, endpoints and certificate fingerprints."""
        return view(providers.get_by_id_or_404(sp_id))

    @blp.arguments(SpOptionsSchema)
    @blp.response(200, SpSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such service provider.")
    def patch(self, args: dict[str, Any], sp_id: int) -> dict[str, Any]:
        """Change a service provider's settings; what is left out stays as it is."""
        sp = providers.get_by_id_or_404(sp_id)
        open_to_all = args.pop("open_to_all", None)
        if open_to_all is not None:
            assignments.resolve_app(sp.entity_id)  # refused (AWS sign-in) before anything changes
        # One commit for both parts (a failure between two would keep half the PATCH).
        providers.update(sp.entity_id, _options(args), caller(), commit=False)
        if open_to_all is not None:
            # Who may use an app changes through the access service, as from the CLI and the UI.
            assignments.set_open_to_all(sp.entity_id, open_to_all, actor=caller())
        db.session.commit()
        return view(sp)

    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema, description="No such service provider.")
    def delete(self, sp_id: int) -> None:
        """Unregister a service provider; its assignments and persistent NameIDs go with it."""
        providers.remove(providers.get_by_id_or_404(sp_id).entity_id, caller())
        db.session.commit()


@blp.route(f"/{SP_ID}/refresh", methods=["POST"])
@blp.response(200, RefreshedSpSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such service provider.")
@blp.alt_response(422, schema=ErrorSchema,
                  description="No metadata URL to refresh from, or the metadata there is refused.")
def refresh(sp_id: int) -> dict[str, Any]:
    """Re-read a service provider's metadata from where it came from; its settings are kept."""
    sp = providers.get_by_id_or_404(sp_id)
    changed = providers.refresh(sp.entity_id, caller())
    db.session.commit()
    return {**view(sp), "metadata_changed": changed}
