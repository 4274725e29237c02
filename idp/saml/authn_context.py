"""What an AuthnRequest's RequestedAuthnContext asks for, and the class our sign-in is stated as for it.

The bridge signs users in with a password over TLS, and its assertions say so (PasswordProtectedTransport). An SP
that asks for more (a smartcard, a second factor) must hear NoAuthnContext (SAML Core 3.3.2.2.1), not get an
assertion it may fail to check. Strength is compared only among the classes below (``unspecified`` weakest); a
class we do not know is never met.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from idp.saml import build

_CLASSES = "urn:oasis:names:tc:SAML:2.0:ac:classes:"
OURS = _CLASSES + "PasswordProtectedTransport"
PASSWORD = _CLASSES + "Password"
UNSPECIFIED = _CLASSES + "unspecified"
# Known classes weaker and stronger than ours.
_WEAKER = (_CLASSES + "InternetProtocol", _CLASSES + "InternetProtocolPassword", PASSWORD)
_STRONGER = (
    *(_CLASSES + c for c in ("X509", "Smartcard", "SmartcardPKI", "SoftwarePKI", "TLSClient", "Kerberos",
                             "TimeSyncToken", "MobileTwoFactorUnregistered", "MobileTwoFactorContract",
                             "MobileOneFactorContract")),
    "https://refeds.org/profile/mfa",
)
COMPARISONS = ("exact", "minimum", "maximum", "better")
_REQUESTED = f"{{{build.SAMLP}}}RequestedAuthnContext"
_CLASS_REF = f"{{{build.SAML}}}AuthnContextClassRef"
_DECL_REF = f"{{{build.SAML}}}AuthnContextDeclRef"


class Malformed(ValueError):
    """A RequestedAuthnContext the schema does not allow."""


@dataclass(frozen=True)
class Requested:
    comparison: str
    class_refs: tuple[str, ...]
    decl_refs: bool  # context declarations: we publish none, so none can match


def read(root: etree._Element) -> Requested | None:
    """The AuthnRequest's RequestedAuthnContext (its root's own child), or None when it has none."""
    found = root.findall(_REQUESTED)
    if not found:
        return None
    if len(found) > 1:
        raise Malformed("more than one RequestedAuthnContext")
    element = found[0]
    comparison = (element.get("Comparison") or "exact").strip()
    if comparison not in COMPARISONS:
        raise Malformed(f"Comparison {comparison!r}")
    classes = tuple((c.text or "").strip() for c in element.findall(_CLASS_REF))
    decls = element.findall(_DECL_REF)
    if not classes and not decls:
        raise Malformed("RequestedAuthnContext names no context")
    return Requested(comparison, classes, bool(decls))


def _rank(ref: str) -> int | None:
    if ref == UNSPECIFIED:
        return -1
    if ref in _WEAKER:
        return _WEAKER.index(ref)
    if ref == OURS:
        return len(_WEAKER)
    if ref in _STRONGER:
        return len(_WEAKER) + 1
    return None


def choose(requested: Requested | None) -> str | None:
    """The class the assertion states for this request, or None when a password sign-in cannot meet it. A
    password sign-in over TLS is truly both PasswordProtectedTransport and Password: it is stated as the former
    unless the request asks for exactly, or at most, the latter."""
    if requested is None:
        return OURS
    if requested.decl_refs:
        return None
    refs = requested.class_refs
    if requested.comparison == "exact":
        return next((OURS if r == UNSPECIFIED else r for r in refs if r in (OURS, PASSWORD, UNSPECIFIED)), None)
    ours = len(_WEAKER)
    ranks = [r for r in map(_rank, refs) if r is not None]
    if requested.comparison == "minimum":
        return OURS if any(r <= ours for r in ranks) else None
    if requested.comparison == "better":
        return OURS if any(r < ours for r in ranks) else None
    # maximum: as strong as we can without exceeding one of them
    if any(r >= ours for r in ranks):
        return OURS
    return PASSWORD if PASSWORD in refs else None
