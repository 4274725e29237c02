"""GET /api/v1/presets: the app presets an SP can be registered from (POST /api/v1/service-providers with
``preset`` and ``params``), with their parameters."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from idp.admin.api.base import PageArgs, blueprint, page_schema
from idp.admin.api.service_providers import AttributeRuleSchema
from idp.saml import presets

blp = blueprint("presets", "/presets", "App presets: what a SaaS vendor's SAML side expects, filled in by parameters.")


class ParameterSchema(ma.Schema):
    name = ma.fields.String(required=True)
    kind = ma.fields.String(required=True, metadata={"description": "host or token"})
    help = ma.fields.String(required=True)
    default = ma.fields.String(allow_none=True)
    required = ma.fields.Boolean(required=True, metadata={"description": "false: may be left out"})


class RoleAttributeSchema(ma.Schema):
    name = ma.fields.String(required=True)
    name_format = ma.fields.String(required=True)


class PresetSchema(ma.Schema):
    name = ma.fields.String(required=True, metadata={"description": "what `preset` takes"})
    display_name = ma.fields.String(required=True)
    entity_id = ma.fields.String(allow_none=True, metadata={"description": "a template; null with a metadata file"})
    acs = ma.fields.List(ma.fields.String(), required=True, metadata={"description": "templates"})
    nameid_format = ma.fields.String(required=True)
    parameters = ma.fields.List(ma.fields.Nested(ParameterSchema), required=True)
    attributes = ma.fields.List(ma.fields.Nested(AttributeRuleSchema), required=True)
    role_attribute = ma.fields.Nested(RoleAttributeSchema, allow_none=True, metadata={
        "description": "the attribute the vendor reads roles from (a `roles` rule of the attribute map)"})


def view(preset: presets.Preset) -> dict[str, Any]:
    return {"name": preset.key, "display_name": preset.display_name, "entity_id": preset.entity_id,
            "acs": list(preset.acs), "nameid_format": preset.nameid_format, "parameters": preset.parameters,
            "attributes": list(preset.attributes), "role_attribute": preset.role_attribute}


@blp.route("")
@blp.arguments(PageArgs, location="query")
@blp.response(200, page_schema(PresetSchema))
def list_presets(args: dict[str, Any]) -> dict[str, Any]:
    """The app presets, by name."""
    found = presets.load_all()
    page, per_page = args["page"], args["per_page"]
    return {"items": [view(p) for p in found[(page - 1) * per_page:page * per_page]], "page": page,
            "per_page": per_page, "total": len(found)}
