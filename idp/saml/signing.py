"""XML signatures and encryption for SAML, in-process (never the ``xmlsec1`` program): verification and
encryption on the ``xmlsec`` binding, our own signatures from lxml's canonicalisation and cryptography's RSA.

Owns: signing our messages and assertions (enveloped RSA-SHA256), verifying what SPs send (HTTP-POST:
an enveloped signature on the message root; HTTP-Redirect: a detached signature over the query string),
signing our outgoing redirect-binding messages, and encrypting assertions for an SP.

Verification is deliberately narrow so that signature-wrapping tricks have nowhere to hide: exactly one
signature, on the root, referencing the root's (unique) ID, with only the transforms SAML uses, with an
allowed algorithm, checked only against certificates from the SP's registered metadata.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
from collections.abc import Sequence
from functools import lru_cache
from urllib.parse import quote, unquote, unquote_plus

import xmlsec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from lxml import etree

from idp.errors import BadRequest
from idp.keys import SigningKey

DS = "http://www.w3.org/2000/09/xmldsig#"
XENC = "http://www.w3.org/2001/04/xmlenc#"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
XML_ID = "{http://www.w3.org/XML/1998/namespace}id"

RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"

# Signature algorithm URI -> (hash, key type). SHA-1 ones are only accepted with allow_sha1.
SIGNATURE_ALGORITHMS: dict[str, tuple[hashes.HashAlgorithm, str]] = {
    RSA_SHA256: (hashes.SHA256(), "rsa"),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": (hashes.SHA384(), "rsa"),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": (hashes.SHA512(), "rsa"),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": (hashes.SHA256(), "ec"),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384": (hashes.SHA384(), "ec"),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512": (hashes.SHA512(), "ec"),
    RSA_SHA1: (hashes.SHA1(), "rsa"),  # noqa: S303 - refused unless the SP is set to allow SHA-1
}
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
DIGEST_ALGORITHMS = {
    SHA256,
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
    SHA1,
}
SHA1_ALGORITHMS = {RSA_SHA1, SHA1}
ALLOWED_TRANSFORMS = {ENVELOPED, EXC_C14N}


class SignatureInvalid(BadRequest):
    """Signed, but the signature is wrong, misplaced, or uses an algorithm we refuse."""


# --- signing ------------------------------------------------------------------------------------------


# Our enveloped signature, as XML-DSig defines it: the element's exclusive canonical form (libxml2's, through
# lxml) digested, SignedInfo canonicalised the same way and signed with the RSA key cryptography parsed once.
# xmlsec made the same signature in 0.45 ms where the RSA operation is 0.25 (it copies the key into each
# context and runs its general transform chain): a tenth of an SSO answer's CPU. xmlsec still verifies and
# decrypts; python3-saml, the xmlsec1 program and the SP libraries verify these signatures in the tests.
_SIGNATURE = etree.fromstring(
    f'<ds:Signature xmlns:ds="{DS}"><ds:SignedInfo>'
    f'<ds:CanonicalizationMethod Algorithm="{EXC_C14N}"/><ds:SignatureMethod Algorithm="{RSA_SHA256}"/>'
    f'<ds:Reference><ds:Transforms><ds:Transform Algorithm="{ENVELOPED}"/><ds:Transform Algorithm="{EXC_C14N}"/>'
    f'</ds:Transforms><ds:DigestMethod Algorithm="{SHA256}"/><ds:DigestValue/></ds:Reference></ds:SignedInfo>'
    "<ds:SignatureValue/><ds:KeyInfo><ds:X509Data><ds:X509Certificate/></ds:X509Data></ds:KeyInfo></ds:Signature>"
)


def _exclusive_c14n(element: etree._Element) -> bytes:
    canonical: bytes = etree.tostring(element, method="c14n", exclusive=True, with_comments=False)
    return canonical


def sign(element: etree._Element, key: SigningKey) -> None:
    """Sign ``element`` (which has an ``ID``) in place; the Signature goes right after its saml:Issuer."""
    element_id = element.get("ID")
    if not element_id:
        raise ValueError("the element to sign has no ID attribute")
    # Digested before the Signature goes in: what the enveloped-signature transform gives a verifier.
    digest = hashlib.sha256(_exclusive_c14n(element)).digest()
    signature = copy.deepcopy(_SIGNATURE)
    signed_info, signature_value, key_info = signature
    reference = signed_info[2]
    reference.set("URI", "#" + element_id)
    reference[2].text = base64.b64encode(digest).decode("ascii")
    key_info[0][0].text = key.cert_b64
    # Schema order: the Signature follows Issuer (Response, Assertion, LogoutRequest...), else comes first.
    issuer = element.find(f"{{{SAML}}}Issuer")
    if issuer is not None:
        issuer.addnext(signature)
    else:
        element.insert(0, signature)
    value = key.rsa_key.sign(_exclusive_c14n(signed_info), padding.PKCS1v15(), hashes.SHA256())
    signature_value.text = base64.b64encode(value).decode("ascii")


def sign_redirect(query: str, key: SigningKey) -> str:
    """Append SigAlg and Signature to an already URL-encoded ``SAMLRequest=...[&RelayState=...]`` query."""
    signed = f"{query}&SigAlg={quote(RSA_SHA256, safe='')}"
    value = key.rsa_key.sign(signed.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signed}&Signature={quote(base64.b64encode(value).decode('ascii'), safe='')}"


# --- verification: HTTP-POST (enveloped signature) -----------------------------------------------------


@lru_cache(maxsize=512)
def _xmlsec_cert_key(cert_b64: str) -> xmlsec.Key | None:
    """An SP certificate parsed once for xmlsec; None when it does not parse."""
    try:
        return xmlsec.Key.from_memory(base64.b64decode(cert_b64), xmlsec.constants.KeyDataFormatCertDer)
    except (xmlsec.Error, binascii.Error, ValueError):
        return None


def _algorithm(node: etree._Element | None, what: str) -> str:
    algorithm = node.get("Algorithm") if node is not None else None
    if not algorithm:
        raise SignatureInvalid(f"the signature has no {what}")
    return str(algorithm)


def _check_algorithms(signature_method: str, digests: list[str], allow_sha1: bool) -> None:
    if signature_method not in SIGNATURE_ALGORITHMS:
        raise SignatureInvalid(f"signature algorithm {signature_method} is not accepted")
    for digest in digests:
        if digest not in DIGEST_ALGORITHMS:
            raise SignatureInvalid(f"digest algorithm {digest} is not accepted")
    if not allow_sha1 and ({signature_method, *digests} & SHA1_ALGORITHMS):
        raise SignatureInvalid("SHA-1 signatures are not accepted from this service provider")


def verify_posted(root: etree._Element, certs_b64: list[str] | tuple[str, ...], allow_sha1: bool) -> bool:
    """True when ``root`` carries a valid enveloped signature by one of ``certs_b64``; False when unsigned.

    Raises :class:`SignatureInvalid` when there is a signature that is not exactly what we accept.
    """
    signatures = root.findall(f"{{{DS}}}Signature")
    if not signatures:
        return False
    if len(signatures) > 1:
        raise SignatureInvalid("the message has more than one signature")
    signature = signatures[0]
    root_id = root.get("ID")
    if not root_id:
        raise SignatureInvalid("the signed message has no ID")
    signed_info = signature.find(f"{{{DS}}}SignedInfo")
    if signed_info is None:
        raise SignatureInvalid("the signature has no SignedInfo")
    if _algorithm(signed_info.find(f"{{{DS}}}CanonicalizationMethod"), "CanonicalizationMethod") != EXC_C14N:
        raise SignatureInvalid("the signature must use exclusive canonicalisation")
    references = signed_info.findall(f"{{{DS}}}Reference")
    if len(references) != 1:
        raise SignatureInvalid("the signature must have exactly one Reference")
    reference = references[0]
    if reference.get("URI") != "#" + root_id:
        raise SignatureInvalid("the signature does not cover the message it is attached to")
    for transform in reference.iterfind(f"{{{DS}}}Transforms/{{{DS}}}Transform"):
        if transform.get("Algorithm") not in ALLOWED_TRANSFORMS:
            raise SignatureInvalid(f"signature transform {transform.get('Algorithm')} is not accepted")
    _check_algorithms(
        _algorithm(signed_info.find(f"{{{DS}}}SignatureMethod"), "SignatureMethod"),
        [_algorithm(reference.find(f"{{{DS}}}DigestMethod"), "DigestMethod")],
        allow_sha1,
    )
    # Signature wrapping: the referenced ID must name the root and nothing else in the document. libxml2
    # also treats xml:id as an ID, so it counts too.
    document = root.getroottree().getroot()
    if sum(1 for el in document.iter() for attr in ("ID", XML_ID) if el.get(attr) == root_id) != 1:
        raise SignatureInvalid("the signed ID occurs more than once in the message")
    for cert in certs_b64:
        key = _xmlsec_cert_key(cert)
        if key is None:
            continue
        ctx = xmlsec.SignatureContext()
        # The key comes from the SP's metadata; with a key set, xmlsec never takes one from KeyInfo.
        ctx.key = key
        try:
            ctx.register_id(root, "ID")
            ctx.verify(signature)
        except xmlsec.Error:
            continue
        return True
    raise SignatureInvalid("the signature does not verify against the service provider's certificate")


# --- verification: HTTP-Redirect (detached signature over the query string) ----------------------------


@lru_cache(maxsize=512)
def _public_key(cert_b64: str) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey | None:
    try:
        key = x509.load_der_x509_certificate(base64.b64decode(cert_b64)).public_key()
    except (ValueError, binascii.Error):
        return None
    return key if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) else None


def _raw_params(query: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        name = unquote(name)
        if name in params:
            raise SignatureInvalid(f"query parameter {name} occurs more than once")
        params[name] = value
    return params


def _verify_detached(
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, key_type: str, hash_: hashes.HashAlgorithm,
    signature: bytes, data: bytes,
) -> bool:
    try:
        if key_type == "rsa" and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hash_)
            return True
        if key_type == "ec" and isinstance(public_key, ec.EllipticCurvePublicKey):
            size = (public_key.curve.key_size + 7) // 8
            if len(signature) == 2 * size:  # XML-DSig's r||s form, as xmlsec produces it
                signature = encode_dss_signature(
                    int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
                )
            public_key.verify(signature, data, ec.ECDSA(hash_))
            return True
    except InvalidSignature:
        pass
    return False


def verify_redirect(query_string: bytes, certs_b64: list[str] | tuple[str, ...], allow_sha1: bool) -> bool:
    """Verify the HTTP-Redirect binding signature over the raw (still URL-encoded) query string.

    False when the query carries no Signature; :class:`SignatureInvalid` when it carries a bad one.
    """
    try:
        params = _raw_params(query_string.decode("ascii"))
    except UnicodeDecodeError:
        raise SignatureInvalid("the query string is not URL-encoded") from None
    if "Signature" not in params:
        return False
    if "SigAlg" not in params:
        raise SignatureInvalid("the query has a Signature but no SigAlg")
    messages = [name for name in ("SAMLRequest", "SAMLResponse") if name in params]
    if len(messages) != 1:
        raise SignatureInvalid("the query must carry exactly one of SAMLRequest and SAMLResponse")
    # The spec's order, over the values exactly as received (re-encoding could differ from the signer's).
    signed = f"{messages[0]}={params[messages[0]]}"
    if "RelayState" in params:
        signed += f"&RelayState={params['RelayState']}"
    signed += f"&SigAlg={params['SigAlg']}"
    sig_alg = unquote_plus(params["SigAlg"])
    _check_algorithms(sig_alg, [], allow_sha1)
    hash_, key_type = SIGNATURE_ALGORITHMS[sig_alg]
    try:
        signature = base64.b64decode(unquote_plus(params["Signature"]), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid("the Signature parameter is not base64") from None
    data = signed.encode("ascii")
    for cert in certs_b64:
        public_key = _public_key(cert)
        if public_key is not None and _verify_detached(public_key, key_type, hash_, signature, data):
            return True
    raise SignatureInvalid("the signature does not verify against the service provider's certificate")


# --- encryption ---------------------------------------------------------------------------------------


# The block ciphers an assertion is encrypted with, by preference: (xmlsec transform, key bits) by URI.
_BLOCK_CIPHERS = {
    "http://www.w3.org/2009/xmlenc11#aes256-gcm": (xmlsec.constants.TransformAes256Gcm, 256),
    "http://www.w3.org/2009/xmlenc11#aes128-gcm": (xmlsec.constants.TransformAes128Gcm, 128),
    "http://www.w3.org/2001/04/xmlenc#aes256-cbc": (xmlsec.constants.TransformAes256Cbc, 256),
    "http://www.w3.org/2001/04/xmlenc#aes128-cbc": (xmlsec.constants.TransformAes128Cbc, 128),
}
_DEFAULT_CIPHER = "http://www.w3.org/2009/xmlenc11#aes256-gcm"


def block_cipher(methods: Sequence[str]) -> str:
    """The cipher for an SP whose metadata lists ``methods`` (md:EncryptionMethod): the first of ours it lists
    (SAML Metadata 2.4.1.1: what it supports; an older SP decrypts AES-CBC only), else AES-256-GCM."""
    return next((uri for uri in _BLOCK_CIPHERS if uri in methods), _DEFAULT_CIPHER)


def encrypt_assertion(response_root: etree._Element, cert_b64: str, methods: Sequence[str] = ()) -> None:
    """Replace the response's saml:Assertion by a saml:EncryptedAssertion for the holder of ``cert_b64``.

    The block cipher the SP's metadata lists (``methods``, :func:`block_cipher`) for the assertion, its key
    wrapped with RSA-OAEP (MGF1, SHA-1 digest: the combination every SAML stack decrypts) to the SP's encryption
    certificate. Sign the assertion before encrypting it.
    """
    transform, bits = _BLOCK_CIPHERS[block_cipher(methods)]
    assertion = response_root.find(f"{{{SAML}}}Assertion")
    if assertion is None:
        raise ValueError("the response has no saml:Assertion to encrypt")
    cert_key = _xmlsec_cert_key(cert_b64)
    if cert_key is None:
        raise BadRequest("the service provider's encryption certificate cannot be used")
    manager = xmlsec.KeysManager()
    manager.add_key(cert_key)
    template = xmlsec.template.encrypted_data_create(
        response_root, transform, type=xmlsec.constants.TypeEncElement, ns="xenc"
    )
    xmlsec.template.encrypted_data_ensure_cipher_value(template)
    key_info = xmlsec.template.encrypted_data_ensure_key_info(template, ns="ds")
    encrypted_key = xmlsec.template.add_encrypted_key(key_info, xmlsec.constants.TransformRsaOaep)
    xmlsec.template.encrypted_data_ensure_cipher_value(encrypted_key)
    ctx = xmlsec.EncryptionContext(manager)
    ctx.key = xmlsec.Key.generate(xmlsec.constants.KeyDataAes, bits, xmlsec.constants.KeyDataTypeSession)
    # lxml serialises a subelement with the namespace declarations it inherits, so the plaintext is a
    # self-contained document: SPs that parse it on its own (not in the Response's context) can read it.
    plaintext = etree.tostring(assertion, with_tail=False)
    encrypted = ctx.encrypt_binary(template, plaintext)
    wrapper = etree.Element(f"{{{SAML}}}EncryptedAssertion", nsmap={"saml": SAML})
    wrapper.append(encrypted)
    assertion.getparent().replace(assertion, wrapper)
