"""The OpenID Connect provider: authlib's authorization server over our clients, codes, tokens and keys.

server.py holds the grants and token endpoints, authorize.py the authorization endpoint's decisions on the
shared SSO session, consent.py what users allowed third-party clients, device.py the device authorization
grant (RFC 8628) and device_page.py its ``/device`` page, clients.py the client registry, claims.py the claims
(via idp.access.claims.release), logout.py RP-initiated logout, views.py the HTTP endpoints and cli.py the
`idp oidc-client` and `idp oidc-consent` commands.
"""
