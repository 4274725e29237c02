"""The portal: what a signed-in user may open (AWS account roles and apps, as access.decide grants them),
and launching each one with a click."""

from flask import Blueprint

bp = Blueprint("portal", __name__, url_prefix="/portal")

# Route modules register on bp when imported.
from idp.portal import aws, views  # noqa: E402,F401
