"""What the API returns: camelCase JSON, times in ms since the epoch."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class UserView(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    external_id: str = Field(alias="externalId")
    name: str
    email: str | None
    image_url: str | None = Field(alias="imageUrl")
    created_at: int = Field(alias="createdAt")
    updated_at: int = Field(alias="updatedAt")

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> UserView:
        return cls.model_validate(doc)
