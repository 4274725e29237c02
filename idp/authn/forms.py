"""Flask-WTF forms of the sign-in pages; each carries a CSRF token (the login form's from the template)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length


class LoginForm(FlaskForm):  # type: ignore[misc]
    # CSRFProtect has checked the token of every POST before the view runs (a 400 without it); the form's own
    # check would read and verify the same token again, and make a new one, on every sign-in.
    class Meta:
        csrf = False

    username = StringField("Username", validators=[DataRequired(), Length(max=255)],
                           render_kw={"autocomplete": "username", "autofocus": True})
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)],
                             render_kw={"autocomplete": "current-password"})


class LogoutForm(FlaskForm):  # type: ignore[misc]
    """Only the CSRF token: signing out is a POST, so another site cannot sign a user out with a link."""
