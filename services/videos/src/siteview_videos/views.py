"""What the API accepts and returns: camelCase JSON, times in ms since the epoch. And the
messages exchanged with the GPU pipeline on the splat topics (`SplatJobMessage`,
`SplatStatusMessage`): the source of truth of their JSON Schemas in docs/schemas/."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from siteview_common.events import Topics
from siteview_videos.domain import (
    DEFAULT_QUALITY,
    CancelReason,
    Quality,
    ReportedStatus,
    SplatReport,
    clean_title,
    clean_url,
)

Title = Annotated[str, AfterValidator(clean_title)]
Url = Annotated[str, AfterValidator(clean_url)]


class NewVideo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title = Field(description="1 to 200 characters, surrounding whitespace removed")
    url: Url = Field(description="an absolute http or https URL of at most 2048 characters")


class VideoChanges(BaseModel):
    """A partial edit: the title, the url or both (neither, or a null, is refused)."""

    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    url: Url | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> VideoChanges:
        if not self.model_fields_set:
            raise ValueError("give a title, a url or both")
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} must not be null")
        return self

    def fields(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class StoredView(BaseModel):
    """A stored document as the API answers it: its `_id` is its `id`."""

    model_config = ConfigDict(populate_by_name=True)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Self:
        return cls.model_validate({**doc, "id": doc["_id"]})


class VideoView(StoredView):
    id: str
    user_id: str = Field(alias="userId")
    title: str
    url: str
    views: int
    created_at: int = Field(alias="createdAt")
    updated_at: int = Field(alias="updatedAt")


class ViewCount(BaseModel):
    views: int


# --- Splats ----------------------------------------------------------------------------------

#: Splat ids: 32 lowercase hex digits.
SPLAT_ID_PATTERN = r"^[0-9a-f]{32}$"
#: Idempotency-Key: 1 to 200 printable ASCII characters.
IDEMPOTENCY_KEY_PATTERN = r"^[\x20-\x7e]{1,200}$"


class NewSplat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quality: Quality = Field(
        default=DEFAULT_QUALITY, description="`preview` (the default, faster) or `full`"
    )


class SplatResult(BaseModel):
    """Where the finished splat is, as the pipeline reported it."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    url: Url = Field(
        max_length=2048,
        pattern=r"^[hH][tT][tT][pP][sS]?://\S+$",
        description="an absolute http or https URL of the splat file",
    )
    format: str = Field(
        min_length=1,
        max_length=32,
        pattern=r"^[a-z0-9][a-z0-9._-]*$",
        description="the file's format, e.g. ply, splat, spz",
    )
    size_bytes: int = Field(alias="sizeBytes", ge=0)
    gaussians: int = Field(ge=0, description="how many Gaussians the splat has")


class SplatError(BaseModel):
    """Why a splat failed: the pipeline's code and message, or `timeout`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    code: str = Field(min_length=1, max_length=100)
    message: str = Field(max_length=2000)


class SplatView(StoredView):
    id: str
    video_id: str = Field(alias="videoId")
    user_id: str = Field(alias="userId")
    status: Literal["queued", "processing", "ready", "failed"]
    quality: Quality
    progress: int = Field(ge=0, le=100)
    result: SplatResult | None
    error: SplatError | None
    created_at: int = Field(alias="createdAt")
    updated_at: int = Field(alias="updatedAt")


class _TopicMessage(BaseModel):
    """A message on a splat topic: exactly its fields, of exactly their types."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class SplatStatusMessage(_TopicMessage):
    """A status report of the GPU pipeline on `siteview.splat-status.v1`, keyed by the splat
    id. `ready` carries a result and no error, `failed` an error and no result, `processing`
    neither; `at` is the pipeline's clock (ms since the epoch): reports apply in its order."""

    model_config = ConfigDict(title="SplatStatus")

    splat_id: str = Field(alias="splatId", pattern=SPLAT_ID_PATTERN)
    status: ReportedStatus
    progress: int = Field(ge=0, le=100, description="percent done")
    result: SplatResult | None
    error: SplatError | None
    at: int = Field(ge=0, description="when the pipeline reported this, ms since the epoch")

    @model_validator(mode="after")
    def _consistent(self) -> SplatStatusMessage:
        if self.status == "ready" and (self.result is None or self.error is not None):
            raise ValueError("a ready splat has a result and no error")
        if self.status == "failed" and (self.error is None or self.result is not None):
            raise ValueError("a failed splat has an error and no result")
        if self.status == "processing" and (self.result is not None or self.error is not None):
            raise ValueError("a processing splat has neither a result nor an error")
        return self

    def report(self) -> SplatReport:
        return SplatReport(
            splat_id=self.splat_id,
            status=self.status,
            progress=self.progress,
            result=None if self.result is None else self.result.model_dump(by_alias=True),
            error=None if self.error is None else self.error.model_dump(),
            at=self.at,
        )


class _JobMessage(_TopicMessage):
    splat_id: str = Field(alias="splatId", pattern=SPLAT_ID_PATTERN)
    video_id: str = Field(alias="videoId", min_length=1)
    user_id: str = Field(alias="userId", min_length=1)

    @classmethod
    def _about(cls, splat: dict[str, Any], **fields: Any) -> Self:
        """The message of `fields` about the stored `splat` (the ids every job carries)."""
        ids = {"splatId": splat["_id"], "videoId": splat["videoId"], "userId": splat["userId"]}
        return cls.model_validate({**ids, **fields})


class SplatRequested(_JobMessage):
    """Reconstruct a splat of the video at `videoUrl`. The same `splatId` may arrive more than
    once (publishing is at least once): it is one job."""

    model_config = ConfigDict(title="SplatRequested")

    type: Literal["splat.requested"]
    video_url: str = Field(alias="videoUrl", min_length=1)
    quality: Quality
    requested_at: int = Field(alias="requestedAt", ge=0, description="ms since the epoch")

    @classmethod
    def of(cls, splat: dict[str, Any]) -> SplatRequested:
        return cls._about(
            splat,
            type="splat.requested",
            videoUrl=splat["videoUrl"],
            quality=splat["quality"],
            requestedAt=splat["createdAt"],
        )


class SplatCancelled(_JobMessage):
    """Stop working on a splat (deleted, its video or user deleted, or timed out here)."""

    model_config = ConfigDict(title="SplatCancelled")

    type: Literal["splat.cancelled"]
    reason: CancelReason
    at: int = Field(ge=0, description="when it was cancelled, ms since the epoch")

    @classmethod
    def of(cls, splat: dict[str, Any]) -> SplatCancelled:
        return cls._about(
            splat, type="splat.cancelled", reason=splat["cancelReason"], at=splat["cancelledAt"]
        )


#: A message on `siteview.splat-jobs.v1` (keyed by the user id), told apart by `type`.
SplatJobMessage = Annotated[SplatRequested | SplatCancelled, Field(discriminator="type")]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _when(status: str, *, result: bool, error: bool) -> dict[str, Any]:
    """`SplatStatusMessage._consistent`'s rule for one status, as JSON Schema."""
    null = {"type": "null"}
    return {
        "if": {"properties": {"status": {"const": status}}},
        "then": {
            "properties": {
                "result": {"$ref": "#/$defs/SplatResult"} if result else null,
                "error": {"$ref": "#/$defs/SplatError"} if error else null,
            }
        },
    }


def status_schema() -> dict[str, Any]:
    """`SplatStatusMessage`'s JSON Schema, with its rules across fields (`allOf`)."""
    schema = SplatStatusMessage.model_json_schema(by_alias=True)
    schema["allOf"] = [
        _when("processing", result=False, error=False),
        _when("ready", result=True, error=False),
        _when("failed", result=False, error=True),
    ]
    return schema


def message_schemas() -> dict[str, str]:
    """The JSON Schema of each splat topic's messages, by file name (docs/schemas/), as
    sorted, indented JSON: the same on every machine."""
    schemas = {
        f"{Topics.SPLAT_JOBS.removeprefix('siteview.')}.json": (
            Topics.SPLAT_JOBS,
            TypeAdapter(SplatJobMessage).json_schema(by_alias=True),
        ),
        f"{Topics.SPLAT_STATUS.removeprefix('siteview.')}.json": (
            Topics.SPLAT_STATUS,
            status_schema(),
        ),
    }
    return {
        name: json.dumps(
            {"$schema": JSON_SCHEMA_DIALECT, "$comment": f"Kafka topic {topic}", **schema},
            indent=2,
            sort_keys=True,
        )
        + "\n"
        for name, (topic, schema) in schemas.items()
    }
