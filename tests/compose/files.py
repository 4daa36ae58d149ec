"""The deployment files at the top of the repository, read as docker compose reads them.

`compose_file()` is docker-compose.yml after compose's variable interpolation with nothing set
in the environment (`${X:-default}` is the default, `$$` a literal `$`); `env_example()` is
.env.example, one entry per `NAME=value` line, commented out or not, with the comment above it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

#: `$$`, `$NAME`, `${NAME}` and `${NAME<op>word}` with op one of :- - :? ? :+ +; any other `$`
#: is invalid (compose refuses the file), as in compose's own template pattern.
VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<word>[^}]*))?\}"
    r"|(?P<invalid>))"
)


def variables(text: str) -> list[tuple[str, str | None, str]]:
    """Every variable `text` refers to: (name, operator or None, word)."""
    found = []
    for match in VARIABLE.finditer(text):
        if match["escaped"] or match["invalid"] is not None:
            continue
        found.append((match["plain"] or match["braced"], match["op"], match["word"] or ""))
    return found


def interpolate(text: str) -> str:
    """`text` as compose reads it with no variable set: defaults apply, `$$` is `$`. A required
    variable (`:?`) or one without a default is an error here: the file must run as written."""

    def value(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["invalid"] is not None:
            raise ValueError(f"a lone $ in {text!r}: compose refuses it (write $$ for a $)")
        name, op = match["plain"] or match["braced"], match["op"]
        if op in (":-", "-"):
            return str(match["word"])
        raise ValueError(f"${{{name}}} has no default: the file does not run as written")

    return VARIABLE.sub(value, text)


def _interpolated(node: Any) -> Any:
    if isinstance(node, str):
        return interpolate(node)
    if isinstance(node, list):
        return [_interpolated(item) for item in node]
    if isinstance(node, dict):
        return {key: _interpolated(value) for key, value in node.items()}
    return node


def raw_compose_file() -> dict[str, Any]:
    """docker-compose.yml as YAML, before interpolation."""
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@cache
def _compose_file() -> dict[str, Any]:
    interpolated = _interpolated(raw_compose_file())
    assert isinstance(interpolated, dict)
    return interpolated


def compose_file() -> dict[str, Any]:
    """docker-compose.yml as compose interpolates it (a fresh copy each call)."""
    import copy

    return copy.deepcopy(_compose_file())


def services() -> dict[str, dict[str, Any]]:
    found = compose_file()["services"]
    assert isinstance(found, dict)
    return found


def is_one_shot(service: dict[str, Any]) -> bool:
    """A job that runs to completion (an init step), not a process kept running: it says so
    with `restart: "no"`. Without a restart policy, a service counts as one kept running (and
    the checks then find it lacks one)."""
    return service.get("restart") == "no"


def healthcheck_argv(service: dict[str, Any]) -> list[str]:
    """The command of a `CMD` healthcheck (what docker executes, without the `CMD`)."""
    test = service["healthcheck"]["test"]
    assert isinstance(test, list) and test[0] == "CMD", f"not an exec-form healthcheck: {test}"
    return [str(part) for part in test[1:]]


@dataclass(frozen=True)
class EnvEntry:
    name: str
    value: str
    commented: bool
    comment: str
    line: int


ENV_LINE = re.compile(r"^(?P<hash>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


def env_example() -> list[EnvEntry]:
    """Each `NAME=value` line of .env.example (`# NAME=value`: commented out, so unset), with
    the comment lines directly above it."""
    entries = []
    comment: list[str] = []
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), start=1):
        if match := ENV_LINE.match(line):
            entries.append(
                EnvEntry(
                    name=match["name"],
                    value=match["value"],
                    commented=bool(match["hash"]),
                    comment=" ".join(comment),
                    line=number,
                )
            )
            comment = []
        elif line.startswith("#"):
            comment.append(line.lstrip("#").strip())
        else:
            comment = []
    return entries
