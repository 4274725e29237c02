"""The stable AWS console link /portal/aws/<account-id>/<permission-set-name>.

It answers with the auto-posting SAML Response to AWS sign-in, as IdP-initiated SSO does for any app. The
decision is asked first, so that a user without that role (or a hand-made link to another account) gets a
403 page, audited by ``authorize``, before anything is built; issuance asks it again, like every sign-in.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from flask import Response, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from idp import clock
from idp.access.decide import AWS_ENTITY_ID, AccountTarget, authorize
from idp.authn.session import current_session, login_url, principal_for
from idp.errors import Conflict
from idp.portal import bp
from idp.saml import providers, sso
from idp.saml.views import answer

# AWS sign-in's default assertion consumer service; an account may name a regional one (Account.signin_url).
GLOBAL_ACS = "https://signin.aws.amazon.com/saml"
METADATA_FILE = Path(__file__).resolve().parents[2] / "metadata" / "presets" / "aws-signin-metadata.xml"

# What the AWS sign-in SP gets: a persistent NameID and, signed twice, nothing but role_attributes.
_SP_OPTIONS = providers.SpOptions(nameid_format="persistent", attribute_map=(), sign_assertion=True,
                                  sign_response=True)


def ensure_sp(actor: str) -> None:
    """AWS sign-in as a registered SP (from METADATA_FILE), registering it on first use."""
    if providers.get(AWS_ENTITY_ID) is not None:
        return
    # A concurrent first launch may register it first: add() then rolls back, and the look-up reads again.
    with contextlib.suppress(Conflict):
        providers.add(METADATA_FILE.read_bytes(), str(METADATA_FILE), _SP_OPTIONS, actor)


@bp.get("/aws/<account_id>/<permission_set>")
def aws_console(account_id: str, permission_set: str) -> BaseResponse:
    if request.method == "HEAD":  # link checkers and prefetchers: no role assumption for them
        return Response(status=200)
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
