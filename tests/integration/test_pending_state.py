"""Parked requests (a sign-in waiting for the password, a Single Logout chain between two SPs): single use, and
a document once taken stays gone, in the database and in Redis alike."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask

from idp import clock
from idp.state import pending


def test_a_parked_document_is_taken_once_and_a_late_update_does_not_bring_it_back(app: Flask) -> None:
    expires = clock.now() + timedelta(minutes=10)
    pending_id = pending.put("test", {"step": 1}, expires)
    assert pending.replace("test", pending_id, {"step": 2}, expires, read={"step": 1})
    assert pending.get("test", pending_id) == {"step": 2}
    assert pending.get("other-kind", pending_id) is None
    # A copy that read the first version comes late: the second stays.
    assert pending.replace("test", pending_id, {"step": 2, "late": True}, expires, read={"step": 1}) is False
    assert pending.get("test", pending_id) == {"step": 2}
    assert pending.take(pending_id) is True
    assert pending.take(pending_id) is False
    # A second copy of the same LogoutResponse finishing its step after the first ended the chain.
    assert pending.replace("test", pending_id, {"step": 3}, expires, read={"step": 2}) is False
    assert pending.get("test", pending_id) is None


def test_a_parked_document_expires_by_the_clock(app: Flask, frozen_clock: Any) -> None:
    pending_id = pending.put("test", {"step": 1}, clock.now() + timedelta(minutes=10))
    frozen_clock.advance(minutes=9, seconds=59)
    assert pending.get("test", pending_id) == {"step": 1}
    frozen_clock.advance(seconds=1)
    assert pending.get("test", pending_id) is None
