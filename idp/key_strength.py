"""Whether a public key from outside (an SP's metadata certificate, an OIDC client's JWKS) is strong enough to
trust a signature made with it: at least 112 bits of security (NIST SP 800-57, OWASP ASVS 6.2), so RSA of 2048
bits or more and elliptic curves of 256 bits or more. A 1024-bit RSA key can be factored by a well-funded
attacker, who could then sign requests as the SP or client."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, rsa

MIN_RSA_BITS = 2048
MIN_EC_BITS = 256


def weakness(key: object) -> str | None:
    """Why ``key`` is too weak, or None. Key types this module does not know are judged by their users."""
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return f"an RSA key of {key.key_size} bits (at least {MIN_RSA_BITS} are needed)"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < MIN_EC_BITS:
        return f"an EC key on {key.curve.name} ({key.curve.key_size} bits; at least {MIN_EC_BITS} are needed)"
    return None
