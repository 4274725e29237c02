import json
import logging

import pytest

from idp.logs import JsonFormatter, MaskSecrets, mask


@pytest.mark.parametrize("line", [
    "login password=hunter2x for alice",
    'payload {"client_secret": "abc123def"}',
    "GET /saml/sso?SAMLRequest=fZJNT8MwDIbv&RelayState=x",
    "token: eyJhbGciOi.payload.sig",
])
def test_secrets_are_masked(line: str) -> None:
    out = mask(line)
    assert "***" in out
    for secret in ("hunter2x", "abc123def", "fZJNT8MwDIbv", "eyJhbGciOi"):
        assert secret not in out


def test_json_line_carries_audit_payload_and_masks_arguments() -> None:
    record = logging.LogRecord("idp.audit", logging.INFO, __file__, 1, "user %s password=%s", ("bob", "s3cret!"),
                               None)
    record.audit = {"type": "login", "username": "bob"}
    MaskSecrets().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "user bob password=***"
    assert line["audit"]["type"] == "login"
    assert line["level"] == "INFO"
