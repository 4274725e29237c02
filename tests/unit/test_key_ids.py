"""Key ids in JWKS and token headers: our generated keys name themselves, a key given by IDP_SIGNING_KEY_FILE goes by
its RFC 7638 thumbprint (computed here from the key's numbers, not by the JOSE library the bridge uses)."""

from __future__ import annotations

import base64
import hashlib
import json

import joserfc.jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from idp.keys import ACTIVE, SigningKey, generate_key_pair


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


def rfc7638_thumbprint(key_pem: bytes) -> str:
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    numbers = key.public_key().public_numbers()
    # Required members only, in lexicographic order, no whitespace (RFC 7638 3.2).
    canonical = json.dumps({"e": _b64(numbers.e), "kty": "RSA", "n": _b64(numbers.n)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def test_an_external_key_is_named_by_its_thumbprint_in_jwks_and_token_headers() -> None:
    key_pem, cert_pem = generate_key_pair("idp.example.test")
    key = SigningKey("external", ACTIVE, key_pem, cert_pem)
    expected = rfc7638_thumbprint(key_pem)
    assert key.jwk_kid == expected
    assert key.public_jwk()["kid"] == expected
    token = joserfc.jwt.encode({"alg": key.alg, "kid": key.jwk_kid}, {"sub": "alice"}, key.jwk)
    assert joserfc.jwt.decode(token, key.jwk).header["kid"] == expected


def test_a_generated_key_keeps_its_own_kid() -> None:
    key_pem, cert_pem = generate_key_pair("idp.example.test")
    key = SigningKey("2026-11-30-rsa", ACTIVE, key_pem, cert_pem)
    assert key.jwk_kid == "2026-11-30-rsa"
    assert key.public_jwk()["kid"] == "2026-11-30-rsa"
    assert key.public_jwk()["kid"] != rfc7638_thumbprint(key_pem)
