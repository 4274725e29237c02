"""The OpenID Connect provider: authlib's authorization server over our clients, codes, tokens and keys.

server.py holds the grants and token endpoints, authorize.py the authorization endpoint's decisions on the
shared SSO session, clients.py the client registry, claims.py the claims (via idp.access.claims.release),
views.py the HTTP endpoints and cli.py the `idp oidc-client` commands.
"""
