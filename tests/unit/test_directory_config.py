"""The IDP_CONFIG file's directories: read at start-up, with every problem reported in one message."""

from __future__ import annotations

from pathlib import Path

import pytest

from idp.config import ConfigError, Settings


def test_directories_are_read_in_order(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("secret\n")
    (tmp_path / "idp.yaml").write_text(f"""
directories:
  - name: corp
    type: ldap
    urls: [ldaps://ldap1.corp.example, ldaps://ldap2.corp.example:1636]
    base_dn: dc=corp,dc=example
    bind_dn: cn=bridge,dc=corp,dc=example
    bind_password_file: {tmp_path / "pw"}
    group_mode: memberof
    domains: [corp.example, CORP]
  - name: local
    type: local
""")
    s = Settings.from_env({"IDP_CONFIG": str(tmp_path / "idp.yaml")})
    corp, local = s.directories
    assert corp.urls == ("ldaps://ldap1.corp.example", "ldaps://ldap2.corp.example:1636")
    assert corp.domains == ("corp.example", "corp") and corp.tls_verify and corp.group_mode == "memberof"
    assert local.type == "local"


def test_a_local_entry_refuses_the_settings_of_a_directory_server(tmp_path: Path) -> None:
    (tmp_path / "idp.yaml").write_text("""
directories:
  - name: local
    type: local
    readiness: false
    urls: ldap://ldap.corp.example
    domains: [example.com]
""")
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"IDP_CONFIG": str(tmp_path / "idp.yaml")})
    text = str(err.value)
    assert "readiness does not apply to a directory of type local" in text
    assert "urls does not apply to a directory of type local" in text
    assert "domains" not in text  # the built-in directory may claim a domain
    (tmp_path / "idp.yaml").write_text("directories:\n  - {name: local, type: local, domains: [example.com]}\n")
    (local,) = Settings.from_env({"IDP_CONFIG": str(tmp_path / "idp.yaml")}).directories
    assert local.domains == ("example.com",)


def test_every_problem_in_the_file_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "idp.yaml").write_text("""
directories:
  - name: corp
    type: ldap
    urls: [http://ldap.corp.example, ldap://ldap.corp.example:notaport, "ldap://bridge:s3cr3t-in-url@[ldap"]
    base_dn: "dc=corp,,"
    bind_dn: cn=bridge,dc=corp,dc=example
    bind_password: in-the-clear
    user_filter: (uid=*
    group_mode: sometimes
    timeout: -1
    colour: blue
  - name: dc
    type: ad
  - name: corp
    type: ldap
    urls: ldap://x
    base_dn: dc=x
""")
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"IDP_CONFIG": str(tmp_path / "idp.yaml"), "IDP_WORKERS": "0",
                           "IDP_BASE_URL": "https://[sso.example.com]"})
    text = str(err.value)
    # What urlsplit cannot read is a problem to report, not a crash; a password in it is not echoed.
    assert "URL 3 has an invalid port or host" in text and "s3cr3t-in-url" not in text
    assert "IDP_BASE_URL: 'https://[sso.example.com]' must be an absolute http(s) URL" in text
    for expected in (
        "IDP_WORKERS", "unknown setting 'colour'", "bind_password must not be written in the file",
        "'http://ldap.corp.example' must be ldap://HOST", "has an invalid port",
        "base_dn: 'dc=corp,,' is not a valid DN",
        "user_filter: must be a parenthesised LDAP filter", "group_mode: 'sometimes'", "timeout: must be between",
        "(dc): urls: at least one ldap://", "the name 'corp' is used twice",
    ):
        assert expected in text, expected
    assert "in-the-clear" not in text


def test_an_unreadable_or_malformed_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.from_env({"IDP_CONFIG": str(tmp_path / "missing.yaml")})
    (tmp_path / "bad.yaml").write_text("directories: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Settings.from_env({"IDP_CONFIG": str(tmp_path / "bad.yaml")})
    (tmp_path / "latin1.yaml").write_bytes("directories: []  # Müller\n".encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"IDP_CONFIG": str(tmp_path / "latin1.yaml")})
    assert err.value.problems == [f"IDP_CONFIG ({tmp_path / 'latin1.yaml'}): not UTF-8 text"]


def test_numbers_that_are_not_finite_or_not_whole_where_a_count_is_asked_are_refused(tmp_path: Path) -> None:
    (tmp_path / "idp.yaml").write_text(f"""
directories:
  - name: corp
    type: ldap
    urls: ldaps://ldap.corp.example
    base_dn: dc=corp,dc=example
    timeout: .nan
    revalidate_seconds: .inf
    pool_size: 2.5
    group_cache_seconds: 60.0
    group_depth: 1{"0" * 400}
""")
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"IDP_CONFIG": str(tmp_path / "idp.yaml")})
    where = f"IDP_CONFIG ({tmp_path / 'idp.yaml'}) directory 1 (corp)"
    assert err.value.problems == [f"{where}: timeout must be a number", f"{where}: revalidate_seconds must be a number",
                                  f"{where}: pool_size must be a whole number",
                                  f"{where}: group_depth must be a number"]


def test_settings_holding_a_control_character_are_refused(tmp_path: Path) -> None:
    """An escape sequence (ESC, a C1 control, a bell) in a URL, DN or filter is a mistake that would reach the
    admin's terminal in listings and messages; tabs and line breaks (a filter written as a YAML block) are not."""
    (tmp_path / "idp.yaml").write_text(r"""
directories:
  - name: corp
    type: ldap
    urls: ["ldaps://ldap.corp.example", "ldaps://ldap2\x1b[2J.corp.example"]
    base_dn: "dc=corp,\adc=example"
    user_filter: "(objectClass=\u009bperson)"
    username_attribute: uid
    group_filter: "(|(objectClass=groupOfNames)\n  (objectClass=posixGroup))"
""")
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"IDP_CONFIG": str(tmp_path / "idp.yaml")})
    where = f"IDP_CONFIG ({tmp_path / 'idp.yaml'}) directory 1 (corp)"
    refused = [p for p in err.value.problems if "control character" in p]
    assert refused == [f"{where}: {key} may not contain a control character"
                       for key in ("urls", "base_dn", "user_filter")]


def test_an_ad_entry_gets_the_active_directory_preset_and_keeps_its_own_values(tmp_path: Path) -> None:
    (tmp_path / "idp.yaml").write_text("""
directories:
  - name: dc
    type: ad
    urls: ldaps://127.0.0.1
    base_dn: DC=example,DC=test
    tls_server_name: DC1.example.test
    domains: [EXAMPLE, example.test]
  - name: dc2
    type: ad
    urls: ldaps://127.0.0.1
    base_dn: DC=example,DC=test
    group_mode: memberof
""")
    dc, dc2 = Settings.from_env({"IDP_CONFIG": str(tmp_path / "idp.yaml")}).directories
    assert (dc.username_attribute, dc.id_attribute, dc.group_mode) == ("sAMAccountName", "objectGUID", "inchain")
    assert dc.user_filter == "(&(objectCategory=person)(objectClass=user))" and dc.group_filter == "(objectClass=group)"
    assert dc.domains == ("example", "example.test") and dc.tls_server_name == "DC1.example.test"
    # Stored rows keep only what differs from the preset, so a row re-read gets the same settings.
    assert "username_attribute" not in dc.public() and dc.public()["tls_server_name"] == "DC1.example.test"
    assert dc2.group_mode == "memberof" and dc2.public()["group_mode"] == "memberof"


def test_the_in_chain_rule_is_refused_for_a_plain_ldap_directory(tmp_path: Path) -> None:
    (tmp_path / "idp.yaml").write_text("""
directories:
  - name: corp
    type: ldap
    urls: ldap://ldap.corp.example
    base_dn: dc=corp,dc=example
    group_mode: inchain
    tls_server_name: "bad name!"
""")
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"IDP_CONFIG": str(tmp_path / "idp.yaml")})
    assert "inchain is Active Directory's matching rule" in str(err.value)
    assert "tls_server_name: 'bad name!' must be a host name" in str(err.value)
