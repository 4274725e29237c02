"""Login and logout pages."""

from flask import Blueprint

bp = Blueprint("authn", __name__)
