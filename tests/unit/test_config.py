from pathlib import Path

import pytest

from idp.config import ConfigError, Settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.base_url == "http://127.0.0.1:5000"
    assert s.data_dir == Path("instance")
    assert s.bind == "127.0.0.1:5000"
    assert s.effective_database_url.startswith("sqlite:///")
    assert not s.https


def test_reads_environment(tmp_path: Path) -> None:
    s = Settings.from_env({
        "IDP_BASE_URL": "https://sso.example.com",
        "IDP_DATA_DIR": str(tmp_path),
        "IDP_DATABASE_URL": "postgresql+psycopg://u@h/db",
        "IDP_LOGIN_MAX_FAILURES": "3",
    })
    assert s.https and s.bind == "sso.example.com:443"
    assert s.data_dir == tmp_path
    assert s.effective_database_url == "postgresql+psycopg://u@h/db"
    assert s.login_max_failures == 3


def test_secret_from_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cr3t-value-of-32-characters-or-more\n")
    s = Settings.from_env({"IDP_SECRET_KEY_FILE": str(tmp_path / "secret")})
    assert s.secret_key == "s3cr3t-value-of-32-characters-or-more"
    assert "s3cr3t" not in repr(s)
    assert not s.weak_secret_key
    (tmp_path / "secret").write_text("s3cr3t-value\n")
    assert Settings.from_env({"IDP_SECRET_KEY_FILE": str(tmp_path / "secret")}).weak_secret_key  # warned of


def test_every_problem_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({
            "IDP_BASE_URL": "ftp:/nowhere",
            "IDP_LOGIN_MAX_FAILURES": "lots",
            "IDP_SESSION_IDLE_SECONDS": "0",
            "IDP_DATABASE_URL": "mysql://x",
            "IDP_SIGNING_KEY_FILE": "/nonexistent/key.pem",
            "IDP_DATABASE_STATEMENT_TIMEOUT_SECONDS": "-1",
            "IDP_DATABASE_NETWORK_TIMEOUT_SECONDS": "3601",
        })
    text = str(err.value)
    for name in ("IDP_BASE_URL", "IDP_LOGIN_MAX_FAILURES", "IDP_SESSION_IDLE_SECONDS", "IDP_DATABASE_URL",
                 "IDP_SIGNING_KEY_FILE and IDP_SIGNING_CERT_FILE", "IDP_SIGNING_KEY_FILE:",
                 "IDP_DATABASE_STATEMENT_TIMEOUT_SECONDS: must be between 0 (off) and 2147483",
                 "IDP_DATABASE_NETWORK_TIMEOUT_SECONDS: must be between 0 (off) and 3600"):
        assert name in text
    assert len(err.value.problems) == 8


@pytest.mark.parametrize(("published", "keys", "attribute"), [
    ("IDP_SIGNING_PUBLISHED_CERT_FILES", ("IDP_SIGNING_KEY_FILE", "IDP_SIGNING_CERT_FILE"), "published_cert_files"),
    ("IDP_EC_SIGNING_PUBLISHED_KEY_FILES", ("IDP_EC_SIGNING_KEY_FILE",), "ec_published_key_files"),
])
def test_published_keys_are_files_and_go_with_a_key_kept_in_files(tmp_path: Path, published: str,
                                                                   keys: tuple[str, ...], attribute: str) -> None:
    path = tmp_path / "next.pem"
    path.write_text("a certificate or a public key")
    settings = Settings.from_env({**dict.fromkeys(keys, str(path)), published: f" {path} ,{path},"})
    assert getattr(settings, attribute) == (path, path)
    with pytest.raises(ConfigError) as err:
        Settings.from_env({published: f"{path},/nonexistent/old.pem"})
    assert err.value.problems == [
        f"{published}: /nonexistent/old.pem is not a readable file",
        f"{published}: only with {keys[0]} (generated keys rotate with `idp keys rotate`)"]


def test_a_yes_or_no_setting_takes_the_usual_words_and_refuses_others() -> None:
    for raw, meant in (("false", False), ("0", False), ("Off", False), (" no", False), ("TRUE", True), ("1", True)):
        assert Settings.from_env({"IDP_DATABASE_PREPARED_STATEMENTS": raw}).database_prepared_statements is meant
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"IDP_DATABASE_PREPARED_STATEMENTS": "flase"})
    assert err.value.problems == ["IDP_DATABASE_PREPARED_STATEMENTS: 'flase' must be true or false"]


def test_urls_holding_passwords_are_never_in_a_repr_and_an_unescaped_at_is_refused() -> None:
    s = Settings.from_env({"IDP_DATABASE_URL": "postgresql+psycopg://idp:pg-s3cret@db/idp",
                           "IDP_REDIS_URL": "redis://:redis-s3cret@cache:6379/0"})
    assert "s3cret" not in repr(s)
    # "p@ss" unescaped: the URL would name the host "ss@db", and every connection error would log it.
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"IDP_DATABASE_URL": "postgresql+psycopg://idp:p@ss@db/idp",
                           "IDP_REDIS_URL": "redis://:r@dis@cache:6379/0"})
    assert err.value.problems == [
        f"{name}: more than one '@' before the host: write an '@' in the user name or password as %40"
        for name in ("IDP_DATABASE_URL", "IDP_REDIS_URL")]
    assert "ss@db" not in str(err.value) and "dis@cache" not in str(err.value)
    assert Settings.from_env({"IDP_DATABASE_URL": "postgresql+psycopg://idp:p%40ss@db/idp"}).database_url


def test_urls_holding_passwords_are_read_from_files_too(tmp_path: Path) -> None:
    (tmp_path / "db").write_text("postgresql+psycopg://idp:pg-s3cret@db/idp\n")
    (tmp_path / "redis").write_text("redis://:redis-s3cret@cache:6379/0\n")
    s = Settings.from_env({"IDP_DATABASE_URL_FILE": str(tmp_path / "db"),
                           "IDP_REDIS_URL_FILE": str(tmp_path / "redis")})
    assert (s.database_url, s.redis_url) == ("postgresql+psycopg://idp:pg-s3cret@db/idp",
                                            "redis://:redis-s3cret@cache:6379/0")
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"IDP_REDIS_URL_FILE": str(tmp_path / "missing")})
    assert err.value.problems == [
        f"IDP_REDIS_URL_FILE: cannot read '{tmp_path / 'missing'}' (No such file or directory)"]


def test_a_setting_set_but_empty_is_refused_not_taken_for_the_default(tmp_path: Path) -> None:
    # As a compose file's ${DATABASE_URL} gives when that is unset: the default would be a SQLite database per
    # instance.
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"IDP_DATABASE_URL": "", "IDP_DATA_DIR": "", "IDP_LOG_LEVEL": " ", "IDP_BASE_URL": "",
                           "IDP_REDIS_URL_FILE": str(tmp_path / "empty"), "IDP_WORKERS": ""})
    assert sorted(err.value.problems) == sorted(f"{name}: set but empty; unset it for the default" for name in (
        "IDP_DATABASE_URL", "IDP_DATA_DIR", "IDP_LOG_LEVEL", "IDP_BASE_URL", "IDP_REDIS_URL_FILE", "IDP_WORKERS"))
    # Lists may be empty: none.
    settings = Settings.from_env({"IDP_AWS_PRINCIPAL_TAGS": "", "IDP_SIGNING_PUBLISHED_CERT_FILES": ""})
    assert settings.aws_tags == () and settings.published_cert_files == ()


def test_a_secret_in_the_environment_and_in_a_file_at_once_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("from-the-file-0123456789abcdef0123")
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"IDP_SECRET_KEY": "from-the-environment-0123456789abcdef",
                           "IDP_SECRET_KEY_FILE": str(tmp_path / "secret")})
    assert err.value.problems == ["IDP_SECRET_KEY and IDP_SECRET_KEY_FILE are both set: set one"]
    with pytest.raises(ConfigError) as err:  # a _FILE set to nothing names no file
        Settings.from_env({"IDP_SECRET_KEY": "from-the-environment-0123456789abcdef", "IDP_SECRET_KEY_FILE": ""})
    assert err.value.problems == ["IDP_SECRET_KEY_FILE: set but empty; unset it for the default"]


def test_a_secret_file_that_is_not_text_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"\xff\xfe binary")
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"IDP_SECRET_KEY_FILE": str(tmp_path / "secret")})
    assert err.value.problems == [f"IDP_SECRET_KEY_FILE: '{tmp_path / 'secret'}' is not UTF-8 text"]


def test_database_and_redis_urls_that_their_clients_cannot_use_are_refused_without_quoting_them() -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"IDP_DATABASE_URL": "postgresql+psycopg://idp:pg-s3cret@db:54x2/idp",
                           "IDP_REDIS_URL": "redis://:redis-s3cret@cache:637900/0"})
    assert err.value.problems == [
        "IDP_DATABASE_URL: not a valid URL: the port must be a number",
        "IDP_REDIS_URL: not a valid URL: its port is not a number from 1 to 65535 (write a '/', '?', '#' or '@' in "
        "the password as %2F, %3F, %23 or %40)"]
    assert "s3cret" not in str(err.value)
    # A '/' in the password ends the host part there: urllib takes the rest for the port, and would quote it.
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"IDP_REDIS_URL": "redis://bridge:Top/S3cret@cache:6379/0"})
    assert "Top" not in str(err.value) and "S3cret" not in str(err.value) and "%2F" in str(err.value)
    for url, problem in (("postgresql:idp:pg-s3cret@db/idp", "not a valid URL"),
                         ("postgresql+psycopg://idp:pg-s3cret@db:70000/idp", "port 70000 is out of range")):
        with pytest.raises(ConfigError) as err:
            Settings.from_env({"IDP_DATABASE_URL": url})
        assert err.value.problems == [f"IDP_DATABASE_URL: {problem}"]
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"IDP_REDIS_URL": "redis://cache:6379/0?socket_timeout=soon"})
    assert err.value.problems == ["IDP_REDIS_URL: not a valid URL: a query parameter's value is not one redis-py "
                                  "takes"]


def test_the_address_served_on_comes_from_the_base_url_ipv6_in_brackets_and_never_port_0() -> None:
    assert Settings.from_env({"IDP_BASE_URL": "http://[::1]:8000"}).bind == "[::1]:8000"
    assert Settings.from_env({"IDP_BASE_URL": "https://[2001:db8::5]/"}).bind == "[2001:db8::5]:443"
    assert Settings.from_env({"IDP_BASE_URL": "http://[fe80::1%25eth0]:8000"}).bind == "[fe80::1%eth0]:8000"
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"IDP_BASE_URL": "http://127.0.0.1:0"})
    assert err.value.problems == ["IDP_BASE_URL: port 0 is no port to serve on"]

