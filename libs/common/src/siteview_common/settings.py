"""Settings base: environment variables through pydantic-settings, one class per process.

`APP_ENV` is `production` unless set. Only `development` (what `make dev` sets) may fall back to
the dev defaults (the embedded stack's URLs, a dev webhook secret, a dev token key); in every
other environment a missing required setting stops the process at start with one line naming it.
"""

from __future__ import annotations

import sys
from typing import Annotated, Literal, NoReturn, TypeVar

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from siteview_common.dev import DEV_JWT_PUBLIC_KEY, DEV_WEBHOOK_SECRET

DEV_KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:9092"
DEV_MONGODB_URL = "mongodb://127.0.0.1:27017"

CsvList = Annotated[tuple[str, ...], NoDecode]


def split_list(value: object) -> object:
    """`a, b c` → ("a", "b", "c"): lists in the environment are comma- or space-separated."""
    if isinstance(value, str):
        return tuple(part for part in value.replace(",", " ").split() if part)
    return value


class MissingSettingError(ValueError):
    def __init__(self, env_name: str, hint: str = "") -> None:
        super().__init__(f"missing required setting {env_name}{hint}")
        self.env_name = env_name


class CommonSettings(BaseSettings):
    """What every process reads."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    app_env: Literal["production", "development"] = "production"
    log_level: str = "INFO"
    host: str = "0.0.0.0"  # noqa: S104 - containers publish the port; make dev binds 127.0.0.1
    port: int = Field(default=8000, ge=0, le=65535)
    cors_origins: CsvList = ()

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return split_list(value)

    @field_validator("cors_origins")
    @classmethod
    def _explicit_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Credentials (the session cookie of the live routes) are allowed for these origins,
        so each must be named: a wildcard would let any site read a signed-in user's data."""
        if "*" in value:
            raise ValueError("name each origin: credentials are allowed, so * is refused")
        return value

    @property
    def is_development(self) -> bool:
        return self.app_env == "development"

    def require(self, value: str | None, env_name: str, dev_default: str | None = None) -> str:
        """The value, or the dev default in development, or a `MissingSettingError`."""
        if value:
            return value
        if self.is_development and dev_default is not None:
            return dev_default
        raise MissingSettingError(env_name)


class KafkaSettings(CommonSettings):
    kafka_bootstrap_servers: str | None = None
    #: Idempotent producers need broker support; the embedded broker (Tansu) has none.
    kafka_enable_idempotence: bool | None = None
    kafka_topic_partitions: int = Field(default=12, ge=1)
    #: Replicas of each topic created at start; unset: min(3, brokers in the cluster).
    kafka_replication_factor: int | None = Field(default=None, ge=1)
    #: `min.insync.replicas` of each topic created at start; unset: replication factor - 1,
    #: at least 1 (with acks=all, a write then survives the loss of one replica).
    kafka_min_insync_replicas: int | None = Field(default=None, ge=1)

    @property
    def kafka_servers(self) -> str:
        return self.require(
            self.kafka_bootstrap_servers, "KAFKA_BOOTSTRAP_SERVERS", DEV_KAFKA_BOOTSTRAP_SERVERS
        )

    @property
    def idempotent_producer(self) -> bool:
        if self.kafka_enable_idempotence is not None:
            return self.kafka_enable_idempotence
        return not self.is_development


class DeliverySettings(CommonSettings):
    """How a worker redelivers a batch that failed."""

    #: Redeliveries of a batch failing the same non-transient way before its culprits are
    #: isolated and dead-lettered. Transient failures (outages) are redelivered forever.
    worker_max_redeliveries: int = Field(default=5, ge=0)
    #: Back-off before a redelivery: exponential from this many seconds, with jitter ...
    worker_retry_initial_seconds: float = Field(default=0.2, gt=0)
    #: ... capped at this many.
    worker_retry_max_seconds: float = Field(default=10.0, gt=0)


class MongoSettings(CommonSettings):
    mongodb_url: str | None = None
    #: Bounds an API's database work: finding a server, connecting, and each operation. A
    #: database that is down or does not answer costs a request this long, then 503.
    mongodb_timeout_seconds: float = Field(default=2.0, gt=0, le=60)

    @property
    def mongo_url(self) -> str:
        return self.require(self.mongodb_url, "MONGODB_URL", DEV_MONGODB_URL)


class ClerkAuthSettings(CommonSettings):
    """Clerk session-token verification (the authenticated APIs)."""

    clerk_jwt_key: str | None = None
    clerk_jwks_url: str | None = None
    clerk_issuer: str | None = None
    clerk_authorized_parties: CsvList = ()
    clerk_audience: str | None = None
    clerk_leeway_seconds: float = Field(default=5.0, ge=0, le=60)
    #: Least time between two JWKS refetches forced by an unknown `kid`.
    clerk_jwks_refetch_cooldown_seconds: float = Field(default=10.0, ge=0)

    @field_validator("clerk_authorized_parties", mode="before")
    @classmethod
    def _split_parties(cls, value: object) -> object:
        return split_list(value)

    @property
    def token_issuer(self) -> str | None:
        """The issuer every token must carry: required outside development, where a token
        from another Clerk instance signed with a key we trust must not pass."""
        if self.clerk_issuer:
            return self.clerk_issuer
        if self.is_development:
            return None
        raise MissingSettingError("CLERK_ISSUER")

    @property
    def jwt_public_key(self) -> str | None:
        """The PEM key; in development without a key or JWKS URL, the dev key."""
        if self.clerk_jwt_key:
            return self.clerk_jwt_key.replace("\\n", "\n")
        if self.clerk_jwks_url:
            return None
        if self.is_development:
            return DEV_JWT_PUBLIC_KEY
        raise MissingSettingError("CLERK_JWT_KEY", " (or CLERK_JWKS_URL)")


class WebhookSecretSettings(CommonSettings):
    clerk_webhook_signing_secret: CsvList = Field(
        default=(),
        validation_alias=AliasChoices("CLERK_WEBHOOK_SIGNING_SECRET", "CLERK_WEBHOOK_SECRET"),
    )

    @field_validator("clerk_webhook_signing_secret", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        return split_list(value)

    @property
    def webhook_secrets(self) -> tuple[str, ...]:
        if self.clerk_webhook_signing_secret:
            return self.clerk_webhook_signing_secret
        if self.is_development:
            return (DEV_WEBHOOK_SECRET,)
        raise MissingSettingError("CLERK_WEBHOOK_SIGNING_SECRET")


class LiveSettings(CommonSettings):
    """The live query streams an API serves (see `siteview_common.live`)."""

    #: A comment line on every open stream this often, so proxies keep idle streams open.
    live_heartbeat_seconds: float = Field(default=15.0, gt=0)
    #: Open streams one user may hold on one API process; one more answers 429.
    live_max_streams_per_user: int = Field(default=5, ge=1)
    #: Open streams one API process holds at most; one more answers 429.
    live_max_streams: int = Field(default=1000, ge=1)
    #: A send blocked this long (a client that does not read) ends that stream.
    live_send_timeout_seconds: float = Field(default=5.0, gt=0)


DEV_CURSOR_SECRET = "siteview-development-cursor-secret"  # noqa: S105 - development only


class PaginationSettings(CommonSettings):
    #: Signs pagination cursors; every replica of an API needs the same value.
    cursor_secret: str | None = None

    @property
    def cursor_signing_secret(self) -> str:
        return self.require(self.cursor_secret, "CURSOR_SECRET", DEV_CURSOR_SECRET)


S = TypeVar("S", bound=CommonSettings)


def exit_with(message: str) -> NoReturn:
    """End the process at start-up with one line naming what is wrong."""
    print(f"siteview: {message}", file=sys.stderr)
    raise SystemExit(2)


def load_settings(cls: type[S], *required: str) -> S:
    """Read `cls` from the environment and resolve every property named in `required`.

    A missing or malformed setting ends the process with one line naming the variable.
    """
    try:
        settings = cls()
        for name in required:
            getattr(settings, name)
    except MissingSettingError as exc:
        exit_with(str(exc))
    except ValidationError as exc:
        error = exc.errors()[0]
        env_name = str(error["loc"][0]).upper() if error["loc"] else cls.__name__
        exit_with(f"invalid setting {env_name}: {error['msg']}")
    return settings
