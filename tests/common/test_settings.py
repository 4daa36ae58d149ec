"""Settings: dev defaults only in development; a missing setting stops with one line."""

from __future__ import annotations

import pytest

from siteview_common.dev import DEV_JWT_PUBLIC_KEY, DEV_WEBHOOK_SECRET
from siteview_common.settings import (
    ClerkAuthSettings,
    KafkaSettings,
    WebhookSecretSettings,
    load_settings,
)
from support import run_module

CLEAR = (
    "APP_ENV",
    "KAFKA_BOOTSTRAP_SERVERS",
    "MONGODB_URL",
    "CLERK_WEBHOOK_SIGNING_SECRET",
    "CLERK_WEBHOOK_SECRET",
    "CLERK_JWT_KEY",
    "CLERK_JWKS_URL",
)


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
            ["siteview_payments", "api"],
            {"MONGODB_URL": "mongodb://127.0.0.1:1", "CLERK_JWT_KEY": "pem"},
            "CURSOR_SECRET",
        ),
        (
            ["siteview_videos", "api"],
            {"MONGODB_URL": "mongodb://127.0.0.1:1", "CLERK_JWT_KEY": "pem"},
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
