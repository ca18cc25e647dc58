"""Controller settings: config file, environment, and secrets read from files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from controller.config import KNOWN_NAMES, SECRET_NAMES, controller_settings, placeholder_environ, read_config
from controller.errors import ConfigError
from tests.conftest import REPO


def test_defaults_need_no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = controller_settings({})
    assert settings.home == tmp_path / ".liminal"
    assert settings.ledger_url == f"sqlite:///{tmp_path / '.liminal' / 'ledger.db'}"
    assert settings.git_token is None


def test_environment_wins_over_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "liminal-controller.yaml"
    config.write_text("registry: 127.0.0.1:5000\nnamespace: ml\n")
    values = read_config({"LIMINAL_CONFIG": str(config), "LIMINAL_NAMESPACE": "prod"})
    assert (values["registry"], values["namespace"]) == ("127.0.0.1:5000", "prod")


@pytest.mark.parametrize("name", sorted(SECRET_NAMES))
def test_every_secret_can_come_from_a_file(tmp_path: Path, name: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-value\n")
    assert read_config({f"LIMINAL_{name.upper()}_FILE": str(secret)})[name] == "s3cr3t-value"
    config = tmp_path / "c.yaml"
    config.write_text(f"{name}_file: {secret}\n")
    assert read_config({"LIMINAL_CONFIG": str(config)})[name] == "s3cr3t-value"
    # the value itself wins over the file
    assert read_config({f"LIMINAL_{name.upper()}": "direct", f"LIMINAL_{name.upper()}_FILE": str(secret)})[name] == (
        "direct"
    )


def test_git_token_file_reaches_the_settings_and_not_their_repr(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("ghp_abcdef\n")
    settings = controller_settings({"LIMINAL_GIT_TOKEN_FILE": str(secret), "LIMINAL_HOME": str(tmp_path)})
    assert settings.git_token == "ghp_abcdef"
    assert "ghp_abcdef" not in repr(settings)


def test_an_unreadable_secret_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read LIMINAL_AIRFLOW_PASSWORD_FILE .*/missing: No such file"):
        read_config({"LIMINAL_AIRFLOW_PASSWORD_FILE": str(tmp_path / "missing")})


def test_unknown_config_file_names_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("registy: x\nnamespace_file: /x\n")
    with pytest.raises(ConfigError, match="unknown setting\\(s\\) namespace_file, registy"):
        read_config({"LIMINAL_CONFIG": str(config)})


def test_placeholders_see_only_the_variables_the_operator_lists() -> None:
    env = {"HOME": "/root", "AWS_SECRET_ACCESS_KEY": "x", "DATABASE_URL": "postgres://app:pw@db/app", "REGION": "eu"}
    assert placeholder_environ(env) == {}  # nothing unless named: a pull request cannot read DATABASE_URL
    listed = {**env, "LIMINAL_PLACEHOLDER_ENV": "REGION, HOME,UNSET"}
    assert placeholder_environ(listed) == {"HOME": "/root", "REGION": "eu"}


@pytest.mark.parametrize("name", ["AWS_SECRET_ACCESS_KEY", "LIMINAL_GIT_TOKEN", "API_KEY", "DB_PASSWORD", "not a name"])
def test_placeholders_may_not_list_credentials(name: str) -> None:
    with pytest.raises(ConfigError, match="LIMINAL_PLACEHOLDER_ENV"):
        placeholder_environ({"LIMINAL_PLACEHOLDER_ENV": name, name: "s3cr3t"})


def test_a_broken_config_file_never_echoes_its_lines(tmp_path: Path) -> None:
    config = tmp_path / "liminal-controller.yaml"
    config.write_text("api_token: tok-s3cr3t-value\ngit_token: [unclosed s3cr3t-too\n")
    with pytest.raises(ConfigError) as caught:
        read_config({"LIMINAL_CONFIG": str(config)})
    assert "s3cr3t" not in str(caught.value)
    assert re.search(r"not valid YAML at line \d+, column \d+$", str(caught.value))


def test_no_configured_secret_reaches_a_log_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import structlog

    from controller import cli

    secret_file = tmp_path / "token"
    secret_file.write_text("file-secret-4242\n")
    monkeypatch.setenv("LIMINAL_GIT_TOKEN", "env-secret-1234")
    monkeypatch.setenv("LIMINAL_API_TOKEN_FILE", str(secret_file))
    monkeypatch.setenv("LIMINAL_LOG_FORMAT", "json")
    cli._configure_logging()
    try:
        structlog.get_logger("t").info(
            "fetch.failed", error="https://x:env-secret-1234@host/r: denied", note="file-secret-4242"
        )
        line = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
    assert "env-secret-1234" not in line and "file-secret-4242" not in line
    assert '"error": "https://***@host/r: denied"' in line and '"note": "***"' in line


def test_the_readme_configuration_reference_lists_every_setting() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    reference = text[text.index("## Configuration reference") :]
    reference = reference[: reference.index("\n## ", 1)]
    rows = [line for line in reference.splitlines() if line.startswith("| `")]
    named = {name for row in rows for name in re.findall(r"`([a-z_]+)`( 🔒)?", row.split(" | ")[0])}
    assert {n for n, _ in named} >= KNOWN_NAMES, sorted(KNOWN_NAMES - {n for n, _ in named})
    assert {n for n, lock in named if lock} == SECRET_NAMES  # each credential is marked as one


def test_control_characters_reach_a_console_log_line_escaped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import structlog

    from controller import cli

    monkeypatch.setenv("LIMINAL_LOG_FORMAT", "console")
    cli._configure_logging()
    try:
        # no space in it: structlog's console renderer would print it raw, escape sequences and all
        structlog.get_logger("t").info("webhook.received", delivery="x\x1b[2J\x1b[1;1H", ok="plain")
        line = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
    assert line.count("\n") == 1 and "\x1b" not in line
    assert "delivery=x\\x1b[2J\\x1b[1;1H" in line and "ok=plain" in line


def test_token_reads_need_a_token_and_take_only_public_or_token() -> None:
    with pytest.raises(ConfigError, match="LIMINAL_API_READS=token needs LIMINAL_API_TOKEN"):
        controller_settings({"LIMINAL_API_READS": "token"})
    with pytest.raises(ConfigError, match="must be public or token"):
        controller_settings({"LIMINAL_API_READS": "private", "LIMINAL_API_TOKEN": "t0ken"})
    assert controller_settings({"LIMINAL_API_READS": "token", "LIMINAL_API_TOKEN": "t0ken"}).api_reads_need_token
    assert not controller_settings({}).api_reads_need_token
