"""SAML endpoints."""

from flask import Blueprint

bp = Blueprint("saml", __name__, url_prefix="/saml")
