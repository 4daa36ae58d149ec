"""What the API accepts and returns: camelCase JSON, times in ms since the epoch."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from siteview_videos.domain import clean_title, clean_url

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


class VideoView(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str
    user_id: str = Field(alias="userId")
    title: str
    url: str
    views: int
    created_at: int = Field(alias="createdAt")
    updated_at: int = Field(alias="updatedAt")

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> VideoView:
        return cls.model_validate({**doc, "id": doc["_id"]})


class ViewCount(BaseModel):
    views: int
