"""Administration: the REST API (/api/v1, admin tokens) and the admin web UI (/admin, members of the admin
group). Both call the same services (idp.authn.directory, idp.saml.providers, idp.oidc.clients, idp.access.*),
so they cannot disagree."""
