"""The stable AWS console link /portal/aws/<account-id>/<permission-set-name>.

It answers with the auto-posting SAML Response to AWS sign-in, as IdP-initiated SSO does for any app. The
decision is asked first, so that a user without that role (or a hand-made link to another account) gets a
403 page, audited by ``authorize``, before anything is built; issuance asks it again, like every sign-in.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from flask import redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from idp import clock
from idp.access.decide import AWS_ENTITY_ID, AccountTarget, authorize
from idp.authn.session import current_session, login_url, principal_for
from idp.errors import Conflict, IdpError
from idp.portal import bp
from idp.prefetch import inert_on_head
from idp.saml import presets, providers, sso
from idp.saml.metadata import MetadataError, parse_sp_metadata
from idp.saml.views import answer

log = logging.getLogger(__name__)

# AWS sign-in's default assertion consumer service; an account may name a regional one (Account.signin_url).
GLOBAL_ACS = "https://signin.aws.amazon.com/saml"
# AWS's own metadata, kept with the presets (metadata/presets, or IDP_PRESETS_DIR: an installed bridge, such as
# the container image, has no repository beside its package).
METADATA_NAME = "aws-signin-metadata.xml"

# What the AWS sign-in SP gets: a persistent NameID and, signed twice, nothing but role_attributes.
_SP_OPTIONS = providers.SpOptions(nameid_format="persistent", attribute_map=(), sign_assertion=True,
                                  sign_response=True)


def signin_urls() -> tuple[str, ...] | None:
    """The AWS sign-in endpoints a console launch may post to: the POST ACS endpoints of the registered AWS SP,
    or of its metadata file before the first launch registers it; None when neither can be read (the launch
    says why)."""
    sp = providers.get(AWS_ENTITY_ID)
    try:
        md = providers.metadata_of(sp) if sp is not None else parse_sp_metadata(_metadata_path().read_bytes())
    except (OSError, MetadataError, _NoMetadata):
        return None
    return tuple(e.location for e in md.acs)


class _NoMetadata(Exception):
    pass


def _metadata_path() -> Path:
    # The operator's presets folder first, then the repository's (a checkout with presets of its own).
    paths = [folder / METADATA_NAME for folder in dict.fromkeys((presets.presets_dir(), presets.DEFAULT_DIR))]
    path = next((p for p in paths if p.is_file()), None)
    if path is None:
        raise _NoMetadata(f"{METADATA_NAME} is in none of {', '.join(str(p.parent) for p in paths)} "
                          "(set IDP_PRESETS_DIR to the presets folder)")
    return path


def ensure_sp(actor: str) -> None:
    """AWS sign-in as a registered SP (AWS's metadata, METADATA_NAME), registering it on first use."""
    if providers.get(AWS_ENTITY_ID) is not None:
        return
    try:
        path = _metadata_path()
    except _NoMetadata as exc:
        raise _not_set_up(str(exc)) from None
    try:
        xml = path.read_bytes()
        entity_id = parse_sp_metadata(xml).entity_id
    except (OSError, MetadataError) as exc:
        raise _not_set_up(f"{path}: {getattr(exc, 'message', None) or exc}") from None
    if entity_id != AWS_ENTITY_ID:
        raise _not_set_up(f"{path} is the metadata of {entity_id!r}, not of {AWS_ENTITY_ID!r}")
    # A concurrent first launch may register it first: add() then rolls back, and the look-up reads again.
    with contextlib.suppress(Conflict):
        providers.add(xml, str(path), _SP_OPTIONS, actor)


def _not_set_up(why: str) -> IdpError:
    """A server problem for the admin (logged, with the path); the user gets a page that says no more."""
    log.error("AWS sign-in cannot be registered: %s", why)
    return IdpError("AWS sign-in is not set up on this server. An administrator must fix this.",
                    "AWS sign-in metadata unusable")


@bp.get("/aws/<account_id>/<permission_set>")
@inert_on_head  # no role assumption for a link checker
def aws_console(account_id: str, permission_set: str) -> BaseResponse:
    session = current_session()
    if session is None:
        return redirect(login_url(url_for("portal.aws_console", account_id=account_id,
                                          permission_set=permission_set)))
    ip = request.remote_addr
    principal = principal_for(session)
    role = authorize(principal, AccountTarget(account_id, permission_set), clock.now(), client_ip=ip).roles[0]
    # AWS sign-in is registered on first use, not by an admin: the audit names who caused it.
    ensure_sp(actor=f"portal (AWS console launch by {principal.username})")
    return answer(sso.aws_launch(AWS_ENTITY_ID, role.signin_url or GLOBAL_ACS, account_id, permission_set,
                                 role.relay_state, ip))
