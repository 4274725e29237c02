"""Revalidating an Active Directory user: the lookup by objectGUID (its raw bytes, escaped, since AD does not
match the string form) and a disabled account ending the user's standing. (Against the Samba DC:
tests/integration/test_ad_signin.py, an account expired after signing in.)"""

from __future__ import annotations

import uuid

import pytest

from idp.authn.connectors.ad import AdDirectory
from idp.authn.connectors.ldap import DirectoryEntry, Lookup
from idp.authn.connectors.ldap_connector import LdapConnector
from idp.authn.connectors.settings import DirectoryConfig, parse_entry


def ad_config() -> DirectoryConfig:
    cfg, problems = parse_entry({"name": "corp", "type": "ad", "urls": ["ldap://127.0.0.1:1"],
                                 "base_dn": "dc=corp,dc=test"}, "test")
    assert cfg is not None, problems
    return cfg


def test_the_objectguid_filter_matches_the_raw_bytes_the_id_was_read_from() -> None:
    directory = AdDirectory(ad_config(), None)
    # A GUID whose bytes include filter metacharacters: ( ) * \ and NUL must all be escaped.
    raw = bytes([0x28, 0x29, 0x2A, 0x5C, 0x00, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x4B])
    external_id = directory._external_id({}, {"objectGUID": [raw]})
    assert external_id == str(uuid.UUID(bytes_le=raw))
    query = directory.id_filter(external_id)
    assert query == ("(&(&(objectCategory=person)(objectClass=user))"
                     "(objectGUID=" + "".join(f"\\{b:02x}" for b in raw) + "))")


def test_an_id_that_is_not_a_guid_finds_nobody_without_asking() -> None:
    directory = AdDirectory(ad_config(), None)
    assert directory.find_by_id("*)(objectGUID=*") == Lookup(None, "unknown user")


def test_a_disabled_account_is_refused_at_revalidation(monkeypatch: pytest.MonkeyPatch) -> None:
    connector = LdapConnector(ad_config(), None)
    entry = DirectoryEntry(dn="CN=Dana,CN=Users,DC=corp,DC=test", external_id=str(uuid.uuid4()), username="dana",
                           email=None, given_name=None, family_name=None, display_name=None, member_of=(),
                           account_state=("disabled",))
    monkeypatch.setattr(connector.directory, "find_by_id", lambda external_id: Lookup(entry))
    verdict = connector.recheck(entry.external_id)
    assert verdict.principal is None and verdict.reason == "account disabled in the directory"
