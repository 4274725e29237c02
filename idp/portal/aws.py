"""The stable AWS console link /portal/aws/<account-id>/<permission-set-name>.

It answers with the auto-posting SAML Response to AWS sign-in, as IdP-initiated SSO does for any app. The
decision is asked first, so that a user without that role (or a hand-made link to another account) gets a
403 page, audited by ``authorize``, before anything is built; issuance asks it again, like every sign-in.
"""

from __future__ import annotations

from pathlib import Path

from flask import Response, redirect, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse

from idp import clock
from idp.access.decide import AWS_ENTITY_ID, AccountTarget, authorize
from idp.authn.session import current_session, login_url, principal_for
from idp.errors import Conflict
from idp.extensions import db
from idp.portal import bp
from idp.saml import providers, sso
from idp.saml.views import answer
from idp.store import ServiceProvider

# AWS sign-in's default assertion consumer service; an account may name a regional one (Account.signin_url).
GLOBAL_ACS = "https://signin.aws.amazon.com/saml"
METADATA_FILE = Path(__file__).resolve().parents[2] / "metadata" / "presets" / "aws-signin-metadata.xml"

# What the AWS sign-in SP gets: a persistent NameID and, signed twice, nothing but role_attributes.
_SP_OPTIONS = providers.SpOptions(nameid_format="persistent", attribute_map=(), sign_assertion=True,
                                  sign_response=True)


def ensure_sp(actor: str) -> ServiceProvider:
    """AWS sign-in as a registered SP (from METADATA_FILE), registering it on first use."""
    sp = providers.get(AWS_ENTITY_ID)
    if sp is not None:
        return sp
    try:
        return providers.add(METADATA_FILE.read_bytes(), str(METADATA_FILE), _SP_OPTIONS, actor)
    except Conflict:  # a concurrent first launch registered it; add() left this request's look-up stale
        return db.session.scalars(select(ServiceProvider).where(ServiceProvider.entity_id == AWS_ENTITY_ID)).one()


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
    sp = ensure_sp(actor=f"portal (AWS console launch by {principal.username})")
    return answer(sso.aws_launch(sp.entity_id, role.signin_url or GLOBAL_ACS, account_id, permission_set,
                                 role.relay_state, ip))
