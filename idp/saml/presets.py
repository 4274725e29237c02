"""App presets: what a SaaS vendor's SAML side expects, kept as YAML in ``metadata/presets/`` (IDP_PRESETS_DIR).

A preset names the vendor's entity ID and ACS URL as templates with named parameters (the account-specific
values: a site, a domain, an alias), the NameID format, the attributes the vendor reads under its own names,
and the attribute it takes roles from. :func:`render` turns a preset and an admin's parameter values into
SP metadata (an SPSSODescriptor with the ACS endpoints and NameIDFormat, no KeyDescriptor) that is then
registered through :func:`idp.saml.providers.add` like any other metadata; a preset may instead name a
metadata file kept beside it (AWS). Every problem in a preset file or a parameter is one line saying which.
:func:`sp_metadata` renders the same kind of metadata for an SP an admin describes by its URLs instead, and
:func:`register` is the whole "add from a preset" the admin API and UI call.
"""

from __future__ import annotations

import base64
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from idp.errors import BadRequest, IdpError, NotFound
from idp.runtime import settings
from idp.saml import providers
from idp.saml.metadata import BINDING_POST, BINDING_REDIRECT, DS, MD, MDUI, PROTOCOL, MetadataError
from idp.store import ServiceProvider

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "metadata" / "presets"
SUFFIX = ".yaml"

_PRESET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_PARAM_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Parameters end up inside URLs: a host is DNS labels; anything else one path/query token, nothing that could
# start a new URL part (/ ? # & = @ :) or need escaping.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*")
_TOKEN = re.compile(r"[A-Za-z0-9_.-]{1,128}")
KINDS = {"host": (_HOST, "a host name (letters, digits, hyphens and dots)"),
         "token": (_TOKEN, "1 to 128 letters, digits, '.', '_' or '-'")}
_KEYS = {"name", "parameters", "entity_id", "acs", "metadata_file", "nameid_format", "attributes",
         "role_attribute"}
_PARAM_KEYS = {"kind", "default", "required", "help"}


class PresetError(BadRequest):
    """A preset file that cannot be used, or parameters that do not fit it."""


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: str  # a key of KINDS
    help: str
    default: str | None = None
    required: bool = True  # False: may be left out (the templates that use it are then skipped)


@dataclass(frozen=True)
class RoleAttribute:
    name: str
    name_format: str  # URN


@dataclass(frozen=True)
class Preset:
    key: str  # the file's name without .yaml: what `--preset` takes
    display_name: str
    parameters: tuple[Parameter, ...]
    entity_id: str | None  # a template; None when metadata_file is given
    acs: tuple[str, ...]  # templates, the first that can be filled in being the default ACS
    metadata_file: Path | None
    nameid_format: str  # URN
    attributes: tuple[dict[str, Any], ...]  # release-map entries, checked
    role_attribute: RoleAttribute | None


# --- finding and reading presets ------------------------------------------------------------------------


def presets_dir() -> Path:
    """IDP_PRESETS_DIR, else the repository's metadata/presets/."""
    configured = settings().presets_dir
    return configured if configured is not None else DEFAULT_DIR


def names(directory: Path | None = None) -> list[str]:
    folder = directory or presets_dir()
    return sorted(p.stem for p in folder.glob("*" + SUFFIX) if _PRESET_NAME.fullmatch(p.stem))


def load(name: str, directory: Path | None = None) -> Preset:
    """The preset ``name`` (NotFound when there is none, PresetError when its file is not usable)."""
    folder = directory or presets_dir()
    if not _PRESET_NAME.fullmatch(name) or not (folder / (name + SUFFIX)).is_file():
        known = ", ".join(names(folder)) or "none"
        # Shown to API and UI callers: the setting's name, not the server's filesystem.
        raise NotFound(f"no preset '{name}' in the presets folder (IDP_PRESETS_DIR); presets: {known}")
    return parse(folder / (name + SUFFIX))


def load_all(directory: Path | None = None) -> list[Preset]:
    folder = directory or presets_dir()
    return [parse(folder / (n + SUFFIX)) for n in names(folder)]


def parse(path: Path) -> Preset:
    """Read and check one preset file; the first problem found is a PresetError naming the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PresetError(f"preset {path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise PresetError(f"preset {path}: not valid YAML ({where}{getattr(exc, 'problem', None) or exc})") from None
    try:
        return _preset(path, data)
    except IdpError as exc:
        raise PresetError(f"preset {path}: {exc.message}") from None


def _text(data: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise PresetError(f"'{key}' must be a non-empty string")
    return value.strip()


def _preset(path: Path, data: object) -> Preset:
    if not isinstance(data, Mapping):
        raise PresetError("must be a mapping (name, parameters, entity_id, acs, ...)")
    unknown = sorted(str(k) for k in data if k not in _KEYS)
    if unknown:
        raise PresetError(f"unknown key '{unknown[0]}' (known: {', '.join(sorted(_KEYS))})")
    display_name = _text(data, "name")
    parameters = _parameters(data.get("parameters") or {})
    metadata_file = _text(data, "metadata_file", required=False)
    if metadata_file is not None:
        if "entity_id" in data or "acs" in data or parameters:
            raise PresetError("a preset with a metadata_file has no entity_id, acs or parameters")
        if Path(metadata_file).name != metadata_file:
            raise PresetError(f"metadata_file {metadata_file!r} must be a file name beside the preset")
        entity_id, acs = None, ()
    else:
        entity_id = _text(data, "entity_id")
        raw_acs = data.get("acs")
        acs = tuple(raw_acs) if isinstance(raw_acs, list) else (raw_acs,)
        if not acs or not all(isinstance(a, str) and a.startswith("https://") for a in acs):
            raise PresetError("'acs' must be an https:// URL template or a list of them")
        optional = {p.name for p in parameters if not p.required and p.default is None}
        known = {p.name for p in parameters}
        for template in (entity_id, *acs):
            fields = _fields(template or "")
            if fields - known:
                raise PresetError(f"template {template!r} uses undeclared parameter '{sorted(fields - known)[0]}'")
        if _fields(entity_id or "") & optional:
            raise PresetError("the entity_id template may use only required parameters or ones with a default")
        if all(_fields(a) & optional for a in acs):
            raise PresetError("at least one 'acs' template must use only required parameters or ones with a default")
    attributes = data.get("attributes") if "attributes" in data else []
    if not isinstance(attributes, list) or not all(isinstance(a, Mapping) for a in attributes):
        raise PresetError("'attributes' must be a list of {attribute, name, name_format} entries")
    rules = tuple(providers.attribute_rule(str(a.get("attribute", "")), str(a.get("name", "")),
                                           a.get("name_format")) for a in attributes)
    return Preset(
        key=path.stem, display_name=display_name or path.stem, parameters=parameters, entity_id=entity_id,
        acs=acs, metadata_file=path.parent / metadata_file if metadata_file else None,
        nameid_format=providers.resolve_nameid_format(_text(data, "nameid_format") or ""),
        attributes=rules, role_attribute=_role_attribute(data.get("role_attribute")),
    )


def _parameters(raw: object) -> tuple[Parameter, ...]:
    if not isinstance(raw, Mapping):
        raise PresetError("'parameters' must map parameter names to {kind, default, required, help}")
    out: list[Parameter] = []
    for name, spec in raw.items():
        if not isinstance(name, str) or not _PARAM_NAME.fullmatch(name):
            raise PresetError(f"parameter name {name!r} must be lower-case letters, digits and '_'")
        if not isinstance(spec, Mapping) or set(spec) - _PARAM_KEYS:
            raise PresetError(f"parameter '{name}' must be a mapping of {', '.join(sorted(_PARAM_KEYS))}")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise PresetError(f"parameter '{name}': kind must be one of {', '.join(KINDS)}")
        default = spec.get("default")
        if default is not None:
            default = str(default)
            _check_value(name, kind, default)
        required = spec.get("required", True)
        if not isinstance(required, bool):
            raise PresetError(f"parameter '{name}': required must be true or false")
        out.append(Parameter(name=name, kind=kind, help=str(spec.get("help") or "").strip(), default=default,
                             required=required and default is None))
    return tuple(out)


def _role_attribute(raw: object) -> RoleAttribute | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise PresetError("'role_attribute' must be a mapping {name, name_format}")
    # The same checks as any roles rule; a placeholder map stands in for the admin's groups.
    rule = providers.attribute_rule("roles", str(raw.get("name", "")), raw.get("name_format"), {"-": ["-"]})
    return RoleAttribute(name=rule["name"], name_format=rule["name_format"])


def _fields(template: str) -> set[str]:
    """The parameters a template names; only plain ``{name}`` fields are allowed (no format specs, no
    attribute or index access), so a template can do nothing but substitute a checked value."""
    found: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise PresetError(f"template {template!r}: {exc}") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if not _PARAM_NAME.fullmatch(field) or spec or conversion:
            raise PresetError(f"template {template!r}: '{{{field}}}' must be a plain {{parameter}}")
        found.add(field)
    return found


# --- filling a preset in -------------------------------------------------------------------------------


def _check_value(name: str, kind: str, value: str) -> None:
    pattern, what = KINDS[kind]
    if not pattern.fullmatch(value):
        raise PresetError(f"parameter '{name}': {value!r} is not {what}", field="params")


def parse_params(specs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``--param KEY=VALUE`` options into a mapping; a key given twice is refused."""
    out: dict[str, str] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PresetError(f"parameter {spec!r} must look like NAME=VALUE", field="params")
        if key in out:
            raise PresetError(f"parameter '{key}' is given twice", field="params")
        out[key] = value.strip()
    return out


def resolve(preset: Preset, given: Mapping[str, str]) -> dict[str, str]:
    """Every parameter's value (given, else its default; optional ones left out when not given), checked."""
    known = {p.name: p for p in preset.parameters}
    for key in given:
        if key not in known:
            offered = ", ".join(known) or "none"
            raise PresetError(f"preset '{preset.key}' has no parameter '{key}' (its parameters: {offered})",
                              field="params")
    values: dict[str, str] = {}
    for p in preset.parameters:
        value = given.get(p.name, p.default)
        if value is None:
            if p.required:
                raise PresetError(f"preset '{preset.key}' needs --param {p.name}=... ({p.help or p.kind})",
                                  field="params")
            continue
        _check_value(p.name, p.kind, value)
        values[p.name] = value
    return values


def _fill(template: str, values: Mapping[str, str]) -> str | None:
    """The template with values substituted; None when it names a parameter that has no value."""
    if _fields(template) - set(values):
        return None
    return template.format_map(values)


def render(preset: Preset, given: Mapping[str, str]) -> bytes:
    """The SP metadata for this preset and these parameter values."""
    values = resolve(preset, given)
    if preset.metadata_file is not None:
        try:
            return preset.metadata_file.read_bytes()
        except OSError as exc:
            raise PresetError(f"preset '{preset.key}': cannot read {preset.metadata_file} "
                              f"({exc.strerror})") from None
    acs = [url for url in (_fill(t, values) for t in preset.acs) if url is not None]
    return sp_metadata(_fill(preset.entity_id or "", values) or "", acs, display_name=preset.display_name,
                       nameid_format=preset.nameid_format)


def sp_metadata(entity_id: str, acs: Sequence[str], *, display_name: str | None = None,
                nameid_format: str | None = None, slo_url: str | None = None,
                certificate_pem: str | None = None) -> bytes:
    """Metadata for an SP known by its URLs rather than by a metadata file (a preset, or an admin's fields):
    an SPSSODescriptor with HTTP-POST ACS endpoints (the first the default), an HTTP-Redirect SLO endpoint
    and one certificate for signing and encryption when given. It is registered like any other metadata,
    through :func:`idp.saml.providers.add`, whose parser checks the URLs."""
    key_b64 = _certificate_b64(certificate_pem) if certificate_pem is not None else None
    try:
        root = etree.Element(f"{{{MD}}}EntityDescriptor", nsmap={"md": MD, "mdui": MDUI, "ds": DS},
                             entityID=entity_id)
        sp = etree.SubElement(root, f"{{{MD}}}SPSSODescriptor", protocolSupportEnumeration=PROTOCOL,
                              WantAssertionsSigned="true")
        # The schema's order: Extensions, KeyDescriptor, SingleLogoutService, NameIDFormat, AssertionConsumerService.
        if display_name:
            ui = etree.SubElement(etree.SubElement(sp, f"{{{MD}}}Extensions"), f"{{{MDUI}}}UIInfo")
            name = etree.SubElement(ui, f"{{{MDUI}}}DisplayName")
            name.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
            name.text = display_name
        if key_b64 is not None:
            key_info = etree.SubElement(etree.SubElement(sp, f"{{{MD}}}KeyDescriptor"), f"{{{DS}}}KeyInfo")
            x509_data = etree.SubElement(key_info, f"{{{DS}}}X509Data")
            etree.SubElement(x509_data, f"{{{DS}}}X509Certificate").text = key_b64
        if slo_url:
            etree.SubElement(sp, f"{{{MD}}}SingleLogoutService", Binding=BINDING_REDIRECT, Location=slo_url)
        if nameid_format:
            etree.SubElement(sp, f"{{{MD}}}NameIDFormat").text = nameid_format
        for index, url in enumerate(dict.fromkeys(acs)):
            endpoint = etree.SubElement(sp, f"{{{MD}}}AssertionConsumerService", Binding=BINDING_POST,
                                        Location=url, index=str(index))
            if index == 0:
                endpoint.set("isDefault", "true")
    except ValueError as exc:  # lxml refuses control characters and the like
        raise MetadataError(f"cannot build SP metadata from these values: {exc}") from None
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _certificate_b64(pem: str) -> str:
    """A PEM certificate (or the base64 between its BEGIN and END lines, as vendors' pages often show it) as
    metadata carries it (base64 DER), or MetadataError."""
    pem = pem.strip()
    if not pem.startswith("-----BEGIN"):
        pem = f"-----BEGIN CERTIFICATE-----\n{pem}\n-----END CERTIFICATE-----"
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("utf-8"))
    except (ValueError, UnicodeEncodeError):
        raise MetadataError("the certificate is not a PEM X.509 certificate (-----BEGIN CERTIFICATE-----)",
                            field="certificate_pem") from None
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


def register(name: str, params: Mapping[str, str], options: providers.SpOptions, actor: str) -> ServiceProvider:
    """Register an SP from the preset ``name`` and its parameter values; the preset's NameID format and
    attribute map apply unless ``options`` give their own."""
    preset = load(name)
    xml = render(preset, params)
    options = replace(options, nameid_format=options.nameid_format or preset.nameid_format,
                      attribute_map=options.attribute_map if options.attribute_map is not None
                      else preset.attributes)
    return providers.add(xml, source_of(preset), options, actor)


def source_of(preset: Preset) -> str | None:
    """What ``idp sp refresh`` may re-read: a preset's metadata file; rendered metadata has nothing to re-read."""
    return str(preset.metadata_file.resolve()) if preset.metadata_file is not None else None


def role_attribute_of(preset: Preset) -> tuple[str, str] | None:
    return (preset.role_attribute.name, preset.role_attribute.name_format) if preset.role_attribute else None
