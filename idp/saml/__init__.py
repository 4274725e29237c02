"""SAML 2.0 identity provider: metadata, SSO, SLO, signing and verification, service providers."""
