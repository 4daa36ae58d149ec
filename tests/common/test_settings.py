"""Settings: dev defaults only in development; a missing setting stops with one line."""

from __future__ import annotations

import json

import pytest
from settings_catalog import every_setting

from siteview_common.dev import DEV_JWT_PUBLIC_KEY, DEV_WEBHOOK_SECRET
from siteview_common.settings import (
    ClerkAuthSettings,
    KafkaSettings,
    MongoSettings,
    WebhookSecretSettings,
    load_settings,
)
from siteview_devstack.broker import free_port
from support import TEST_AZP, TEST_ISSUER, run_module

CLEAR = ("APP_ENV", *sorted(every_setting()))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CLEAR:
        monkeypatch.delenv(name, raising=False)


def test_production_is_the_default_and_has_no_dev_fallbacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load_settings(KafkaSettings, "kafka_servers")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "siteview: missing required setting KAFKA_BOOTSTRAP_SERVERS\n"


def test_development_falls_back_to_the_embedded_stack_and_dev_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_ENV", "development")
    assert load_settings(KafkaSettings).kafka_servers == "127.0.0.1:9092"
    assert load_settings(WebhookSecretSettings).webhook_secrets == (DEV_WEBHOOK_SECRET,)
    assert load_settings(ClerkAuthSettings).jwt_public_key == DEV_JWT_PUBLIC_KEY
    assert load_settings(KafkaSettings).idempotent_producer is False


def test_secret_lists_split_on_commas_and_spaces_and_the_seed_name_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLERK_WEBHOOK_SECRET", "whsec_a, whsec_b whsec_c")
    assert WebhookSecretSettings().webhook_secrets == ("whsec_a", "whsec_b", "whsec_c")
    monkeypatch.setenv("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_new")
    assert WebhookSecretSettings().webhook_secrets == ("whsec_new",)


def test_jwt_key_accepts_escaped_newlines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "CLERK_JWT_KEY", "-----BEGIN PUBLIC KEY-----\\nabc\\n-----END PUBLIC KEY-----"
    )
    assert ClerkAuthSettings().jwt_public_key == (
        "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----"
    )


def test_a_malformed_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("APP_ENV", "staging")
    with pytest.raises(SystemExit):
        load_settings(KafkaSettings)
    err = capsys.readouterr().err
    assert err.startswith("siteview: invalid setting APP_ENV:")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "variable"),
    [
        (["siteview_webhooks"], "KAFKA_BOOTSTRAP_SERVERS"),
        (["siteview_users", "api"], "MONGODB_URL"),
        (["siteview_users", "worker"], "MONGODB_URL"),
    ],
)
def test_a_production_process_without_settings_stops_with_one_line(
    argv: list[str], variable: str
) -> None:
    result = run_module(argv, {"PATH": "/usr/bin:/bin", "APP_ENV": "production"})
    assert result.returncode == 2
    assert result.stderr == f"siteview: missing required setting {variable}\n"


@pytest.mark.parametrize(
    ("argv", "settings", "variable"),
    [
        (
            ["siteview_webhooks"],
            {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
            "CLERK_WEBHOOK_SIGNING_SECRET",
        ),
        (
            ["siteview_users", "api"],
            {"MONGODB_URL": "mongodb://127.0.0.1:1", "CLERK_JWT_KEY": "pem"},
            "CLERK_ISSUER",
        ),
        (
            ["siteview_payments", "api"],
            {"MONGODB_URL": "mongodb://127.0.0.1:1", "CLERK_JWT_KEY": "pem"},
            "CLERK_ISSUER",
        ),
        (
            ["siteview_payments", "api"],
            {
                "MONGODB_URL": "mongodb://127.0.0.1:1",
                "CLERK_JWT_KEY": "pem",
                "CLERK_ISSUER": TEST_ISSUER,
            },
            "CURSOR_SECRET",
        ),
        (
            ["siteview_videos", "api"],
            {
                "MONGODB_URL": "mongodb://127.0.0.1:1",
                "CLERK_JWKS_URL": "https://clerk.siteview.test/.well-known/jwks.json",
                "CLERK_ISSUER": TEST_ISSUER,
            },
            "CURSOR_SECRET",
        ),
    ],
)
def test_a_production_process_with_some_settings_names_the_next_missing_one(
    argv: list[str], settings: dict[str, str], variable: str
) -> None:
    result = run_module(argv, {"PATH": "/usr/bin:/bin", **settings})
    assert result.returncode == 2
    assert result.stderr == f"siteview: missing required setting {variable}\n"


def test_production_requires_the_issuer_and_development_may_leave_it_unset(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLERK_JWT_KEY", "pem")
    with pytest.raises(SystemExit) as exit_info:
        load_settings(ClerkAuthSettings, "jwt_public_key", "token_issuer")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "siteview: missing required setting CLERK_ISSUER\n"
    monkeypatch.setenv("CLERK_ISSUER", TEST_ISSUER)
    assert load_settings(ClerkAuthSettings, "token_issuer").token_issuer == TEST_ISSUER
    monkeypatch.delenv("CLERK_ISSUER")
    monkeypatch.setenv("APP_ENV", "development")
    assert load_settings(ClerkAuthSettings, "token_issuer").token_issuer is None


def test_the_database_timeout_defaults_to_two_seconds_and_must_be_positive(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert MongoSettings().mongodb_timeout_seconds == 2.0
    monkeypatch.setenv("MONGODB_TIMEOUT_SECONDS", "0.5")
    assert MongoSettings().mongodb_timeout_seconds == 0.5
    monkeypatch.setenv("MONGODB_TIMEOUT_SECONDS", "0")
    with pytest.raises(SystemExit):
        load_settings(MongoSettings)
    assert capsys.readouterr().err.startswith("siteview: invalid setting MONGODB_TIMEOUT_SECONDS:")


def api_start_output(**settings: str) -> tuple[list[dict[str, object]], str]:
    """Start a production users API on a database that is not there: its JSON log lines
    and its last line on stderr (it stops at start once it finds no database)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "MONGODB_URL": f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=200",
        "CLERK_JWT_KEY": "pem",
        "CLERK_ISSUER": TEST_ISSUER,
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",  # required, never reached: MongoDB is first
        **settings,
    }
    result = run_module(["siteview_users", "api"], env)
    assert result.returncode == 2
    logs = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return logs, result.stderr


def test_a_production_api_without_authorized_parties_warns_once_at_start() -> None:
    logs, stderr = api_start_output()
    warnings = [log for log in logs if "CLERK_AUTHORIZED_PARTIES" in str(log["message"])]
    assert len(warnings) == 1
    assert warnings[0]["level"] == "WARNING" and warnings[0]["service"] == "users-api"
    # It got as far as looking for the database; it then stopped for the missing database.
    assert stderr == "siteview: cannot reach MongoDB at MONGODB_URL: ServerSelectionTimeoutError\n"


@pytest.mark.parametrize(
    "settings", [{"CLERK_AUTHORIZED_PARTIES": TEST_AZP}, {"APP_ENV": "development"}]
)
def test_an_api_with_authorized_parties_or_in_development_does_not_warn(
    settings: dict[str, str],
) -> None:
    logs, stderr = api_start_output(**settings)
    # Proof that start-up went past the point where it would have warned:
    assert stderr == "siteview: cannot reach MongoDB at MONGODB_URL: ServerSelectionTimeoutError\n"
    assert not [log for log in logs if "CLERK_AUTHORIZED_PARTIES" in str(log["message"])]
