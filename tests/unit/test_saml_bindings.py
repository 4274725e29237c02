"""Decoding SAML bindings: bounded inflation, strict base64, and nothing but MessageRefused on garbage."""

from __future__ import annotations

import base64
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idp.saml.bindings import REDIRECT, MessageRefused, decode_post, decode_redirect, inflate


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def test_redirect_round_trip_keeps_relay_state_and_query() -> None:
    xml = b"<samlp:AuthnRequest/>"
    inbound = decode_redirect(base64.b64encode(deflate(xml)).decode(), "rs", b"SAMLRequest=x", 1024)
    assert (inbound.binding, inbound.xml, inbound.relay_state, inbound.query_string) == (
        REDIRECT, xml, "rs", b"SAMLRequest=x")


def test_post_accepts_base64_wrapped_in_lines() -> None:
    xml = b"<a>" + b"x" * 200 + b"</a>"
    wrapped = "\n".join(base64.encodebytes(xml).decode().splitlines())
    assert decode_post(wrapped, None, 1024).xml == xml


def test_inflate_stops_at_the_limit() -> None:
    assert inflate(deflate(b"a" * 1000), 1000) == b"a" * 1000
    with pytest.raises(MessageRefused):
        inflate(deflate(b"a" * 1001), 1000)


def test_too_long_relay_state_is_refused() -> None:
    with pytest.raises(MessageRefused):
        decode_post(base64.b64encode(b"<a/>").decode(), "r" * 5000, 1024)


def test_oversized_post_is_refused_before_decoding() -> None:
    with pytest.raises(MessageRefused):
        decode_post(base64.b64encode(b"a" * 4096).decode(), None, 1024)


@given(st.binary(max_size=512))
def test_garbage_redirect_is_refused_or_decoded_never_crashes(data: bytes) -> None:
    for message in (base64.b64encode(data).decode(), data.decode("latin-1")):
        try:
            out = decode_redirect(message, None, b"", 256).xml
        except MessageRefused:
            continue
        assert len(out) <= 256


@given(st.text(max_size=256))
def test_garbage_post_is_refused_or_decoded_never_crashes(text: str) -> None:
    try:
        out = decode_post(text, None, 256).xml
    except MessageRefused:
        return
    assert len(out) <= 256
