"""The splat topics' JSON Schemas in docs/schemas/ are exactly what their pydantic models
(the source of truth) generate."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from siteview_ops.schemas import REGENERATE, SCHEMAS, stale_schemas
from siteview_videos.views import message_schemas


def test_the_committed_schemas_are_current() -> None:
    stale = stale_schemas()
    assert not stale, f"stale JSON Schemas: {[str(p) for p in stale]}; {REGENERATE}"


def test_a_stale_or_missing_file_is_named(tmp_path: Path) -> None:
    names = sorted(message_schemas())
    assert names == ["splat-jobs.v1.json", "splat-status.v1.json"]
    (tmp_path / names[0]).write_text(message_schemas()[names[0]].replace("splat", "spat"))
    assert stale_schemas(tmp_path) == [tmp_path / n for n in names]


def test_each_schema_is_a_valid_json_schema_and_its_file_deterministic() -> None:
    for name, text in message_schemas().items():
        schema = json.loads(text)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert text == json.dumps(schema, indent=2, sort_keys=True) + "\n", name
        assert (SCHEMAS / name).is_file()
