"""docker-compose.yml, .env.example and the Dockerfile, checked without a Docker engine: the
Compose specification's schema, what every build and COPY needs, the settings the code reads,
and the shape of the stack (health, dependencies, restarts, limits, scaling, data on volumes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from fnmatch import fnmatch
from functools import cache
from importlib.resources import files
from typing import Any

import jsonschema
import pytest
from compose.files import (
    COMPOSE_FILE,
    DOCKERFILE,
    DOCKERIGNORE,
    ROOT,
    compose_file,
    env_example,
    healthcheck_argv,
    interpolate,
    is_one_shot,
    raw_compose_file,
    services,
    variables,
)
from pydantic import TypeAdapter
from settings_catalog import SERVICES_SETTINGS, env_names

from siteview_devstack.processes import service_specs

#: Set by docker-compose.yml itself, per process: everything else comes from .env.
COMPOSE_OWNED = {"PORT", "MONGODB_DATABASE"}


@cache
def compose_schema() -> dict[str, Any]:
    """The Compose specification's JSON schema, as check-jsonschema ships it (vendored there
    from the compose-spec repository, Apache-2.0)."""
    vendor = files("check_jsonschema.builtin_schemas.vendor")
    loaded = json.loads(vendor.joinpath("compose-spec.json").read_text())
    assert isinstance(loaded, dict)
    return loaded


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(compose_schema())
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


def code_env_names() -> set[str]:
    return set().union(*(env_names(cls) for cls in SERVICES_SETTINGS.values()))


def processes() -> dict[str, dict[str, Any]]:
    """The services that run SiteView's own processes (built from the Dockerfile's images)."""
    images = {s["image"] for s in services().values() if "build" in s}
    return {
        name: s for name, s in services().items() if s.get("image") in images and not is_one_shot(s)
    }


# --- the Compose specification ---------------------------------------------------------------


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    assert schema_errors(compose_file()) == []


def test_the_schema_check_refuses_what_compose_refuses() -> None:
    """The check is live: a key compose does not know, or a wrong dependency condition, fails."""
    document = compose_file()
    document["services"]["users-api"]["helthcheck"] = {"test": ["CMD", "true"]}
    assert any("helthcheck" in error for error in schema_errors(document))
    document = compose_file()
    document["services"]["users-api"]["depends_on"]["mongo"]["condition"] = "service_ready"
    assert schema_errors(document)


def test_the_file_runs_as_written_without_empty_defaults() -> None:
    """No `${X:-}` (an empty string where unset was meant) anywhere, no variable without a
    default, and no service environment taken from the operator's shell: settings come from
    the env file, and one left out of it is unset."""
    text = COMPOSE_FILE.read_text()
    empty = [f"${{{name}{op}}}" for name, op, word in variables(text) if op and not word]
    assert empty == []
    compose_file()  # interpolation refuses variables without a default and lone `$`s
    for name, service in raw_compose_file()["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: environment as a mapping"
        for key, value in environment.items():
            assert "$" not in str(value), f"{name}.{key} is interpolated: {value}"


@pytest.mark.parametrize("text", ["${CLERK_AUDIENCE:-}", "${CLERK_AUDIENCE-}"])
def test_an_empty_default_is_found(text: str) -> None:
    assert [(name, word) for name, _, word in variables(text)] == [("CLERK_AUDIENCE", "")]


@pytest.mark.parametrize("text", ["${CURSOR_SECRET}", "$CURSOR_SECRET", "a $ sign", "$(seq 3)"])
def test_interpolation_refuses_what_would_not_run_as_written(text: str) -> None:
    with pytest.raises(ValueError):
        interpolate(text)


# --- images: the Dockerfile and what compose builds ------------------------------------------


def test_every_build_context_dockerfile_and_service_exists() -> None:
    builds = {name: s["build"] for name, s in services().items() if "build" in s}
    assert builds, "nothing is built"
    for name, build in builds.items():
        context = (COMPOSE_FILE.parent / build["context"]).resolve()
        assert context.is_dir(), f"{name}: no build context {context}"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: no {dockerfile}"
        service = build["args"]["SERVICE"]
        pyproject = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())
        assert f"siteview-{service}" in pyproject["project"]["scripts"], name


def test_each_image_is_built_once_and_every_process_runs_a_built_one() -> None:
    built: dict[str, str] = {}
    for name, service in services().items():
        if "build" in service:
            image = service.get("image")
            assert image, f"{name} builds an image without naming it"
            assert image not in built, f"{image} is built by both {built[image]} and {name}"
            built[image] = name
    assert set(built) == {f"siteview-{s}:local" for s in SERVICES_SETTINGS}
    for name, service in services().items():
        image = service["image"]
        if image.startswith("siteview-"):
            assert image in built, f"{name} runs {image}, which nothing builds"


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_every_copy_source_of_the_dockerfile_exists_and_is_sent_to_the_builder() -> None:
    ignored = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for keyword, rest in dockerfile_instructions():
        if keyword in ("COPY", "ADD"):
            parts = rest.split()
            if any(part.startswith("--from=") for part in parts):
                continue
            sources += [part for part in parts[:-1] if not part.startswith("--")]
    assert sources, "the Dockerfile copies nothing from the context"
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the build context"
        excluded = [p for p in ignored if fnmatch(source, p) or fnmatch(source, p.rstrip("/"))]
        assert not excluded, f"COPY {source} is excluded by .dockerignore {excluded}"


def test_the_build_context_leaves_out_secrets_and_local_data() -> None:
    ignored = set(DOCKERIGNORE.read_text().split())
    assert {".env", ".data", ".venv", ".git"} <= ignored


def test_the_dockerfile_builds_the_service_its_argument_names() -> None:
    instructions = dockerfile_instructions()
    assert ("ARG", "SERVICE") in instructions
    runs = " ".join(rest for keyword, rest in instructions if keyword in ("RUN", "ENTRYPOINT"))
    assert '--package "siteview-${SERVICE}"' in runs
    assert "exec siteview-${SERVICE}" in runs


# --- processes: one api and one worker per service, health, dependencies, limits -------------


def test_every_service_runs_as_its_processes_on_the_codes_ports() -> None:
    """The gateway, and an api and a worker per consuming service, each on the port the code
    and `make dev` give it (workers: their API's port + 100), set explicitly as PORT."""
    expected = {spec.name: (list(spec.args), spec.port) for spec in service_specs(8000)}
    found = {}
    for name, service in processes().items():
        found[name] = (service.get("command", []), service["environment"]["PORT"])
    assert found == expected


def test_each_api_and_worker_share_their_services_image_and_database() -> None:
    for service in SERVICES_SETTINGS:
        if service == "webhooks":
            continue
        api, worker = services()[f"{service}-api"], services()[f"{service}-worker"]
        assert api["image"] == worker["image"] == f"siteview-{service}:local"
        assert api["build"]["args"]["SERVICE"] == service
        assert "build" not in worker, "built once, by the api"
        for process in (api, worker):
            assert process["environment"]["MONGODB_DATABASE"] == service


def test_processes_take_their_settings_from_the_env_file() -> None:
    for name, service in processes().items():
        assert service["env_file"] == ".env", name
        assert set(service["environment"]) <= COMPOSE_OWNED, name


def test_workers_scale_no_fixed_name_or_host_port() -> None:
    """`docker compose up --scale users-worker=3` needs workers without a container name or a
    published port; no service anywhere has a fixed container name."""
    for name, service in services().items():
        assert "container_name" not in service, name
        assert "replicas" not in service.get("deploy", {}), f"{name}: --scale decides"
    workers = [name for name in processes() if name.endswith("-worker")]
    assert len(workers) == len(SERVICES_SETTINGS) - 1
    for name in workers:
        assert "ports" not in services()[name], name


def test_every_process_reports_ready_on_readyz_at_its_port() -> None:
    for name, service in processes().items():
        argv = healthcheck_argv(service)
        assert argv[:2] == ["python", "-c"], name
        assert '"http://127.0.0.1:%s/readyz" % os.environ["PORT"]' in argv[2], name


def test_every_long_running_container_has_a_healthcheck_restart_policy_and_limits() -> None:
    for name, service in services().items():
        if is_one_shot(service):
            continue
        assert service["restart"] in ("unless-stopped", "always"), name
        assert service["healthcheck"]["test"], name
        limits = service["deploy"]["resources"]["limits"]
        assert limits.get("cpus") and limits.get("memory"), name


def test_dependencies_wait_for_health_and_for_init_steps_to_succeed() -> None:
    """A process starts once what it needs is healthy and every init step has succeeded. Only
    an init step may wait for a mere start: its job is what makes that dependency healthy."""
    for name, service in services().items():
        for dependency, spec in service.get("depends_on", {}).items():
            condition = spec["condition"]
            if is_one_shot(services()[dependency]):
                assert condition == "service_completed_successfully", f"{name} -> {dependency}"
            elif is_one_shot(service):
                assert condition in ("service_healthy", "service_started"), name
            else:
                assert condition == "service_healthy", f"{name} -> {dependency}"
    # `up --wait` takes a one-shot job's exit for success only when a running service waits
    # for it to complete.
    for name, job in services().items():
        if is_one_shot(job):
            waiting = [
                other
                for other, service in services().items()
                if not is_one_shot(service)
                and service.get("depends_on", {}).get(name, {}).get("condition")
                == "service_completed_successfully"
            ]
            assert waiting, f"no running service waits for {name} to complete"
    # MongoDB is healthy only once mongo-init made it primary: waiting for its health would
    # never end.
    assert services()["mongo-init"]["depends_on"]["mongo"]["condition"] == "service_started"
    for name, service in processes().items():
        needs = service["depends_on"]
        assert needs["kafka-init"]["condition"] == "service_completed_successfully", name
        if name != "webhooks":
            assert needs["mongo"]["condition"] == "service_healthy", name


# --- Kafka and MongoDB ------------------------------------------------------------------------


def volume_targets(service: dict[str, Any]) -> list[str]:
    targets = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            assert source in compose_file()["volumes"], f"{source} is not a named volume"
            targets.append(target)
        else:
            targets.append(volume["target"])
    return targets


def test_kafka_runs_in_kraft_mode_with_its_log_on_the_volume() -> None:
    kafka = services()["kafka"]
    assert kafka["image"] == "apache/kafka:3.9.1"
    env = {key: str(value) for key, value in kafka["environment"].items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not (set(env) & {"KAFKA_ZOOKEEPER_CONNECT", "KAFKA_BROKER_ID"})
    [target] = volume_targets(kafka)
    for log_dir in env["KAFKA_LOG_DIRS"].split(","):
        assert log_dir == target or log_dir.startswith(target + "/"), log_dir
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_NUM_PARTITIONS"] == "12"


def test_every_kafka_listener_has_a_protocol_and_the_host_one_is_published() -> None:
    env = {k: str(v) for k, v in services()["kafka"]["environment"].items()}
    protocols = dict(
        pair.split(":") for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    listeners = [item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")]
    assert set(listeners) <= set(protocols)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised["PLAINTEXT"] == "kafka:9092"
    host, port = advertised["HOST"].rsplit(":", 1)
    assert f"{host}:{port}:9094" in services()["kafka"]["ports"]


def test_kafka_init_creates_the_topics_with_the_codes_own_rules() -> None:
    init = services()["kafka-init"]
    assert is_one_shot(init)
    assert init["image"] == "siteview-webhooks:local"
    assert init["env_file"] == ".env"
    script = init["entrypoint"][-1]
    assert "ensure_topics(settings)" in script


def test_mongodb_is_a_replica_set_healthy_only_with_a_writable_primary() -> None:
    mongo = services()["mongo"]
    assert mongo["image"] == "mongo:7"
    command = mongo["command"]
    assert command[command.index("--replSet") + 1] == "rs0"
    assert volume_targets(mongo) == ["/data/db"]
    check = " ".join(healthcheck_argv(mongo))
    assert "isWritablePrimary ? 0 : 1" in check
    assert "initiate" not in check, "a healthcheck reports; it does not change the database"
    init = " ".join(services()["mongo-init"]["command"])
    assert "rs.initiate" in init and "isWritablePrimary" in init
    url = next(e.value for e in env_example() if e.name == "MONGODB_URL")
    assert url == "mongodb://mongo:27017/?replicaSet=rs0"


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash parses the init step")
def test_the_mongo_init_step_is_valid_bash() -> None:
    init = services()["mongo-init"]
    assert init["entrypoint"] == ["bash", "-c"]
    [script] = init["command"]
    bash = shutil.which("bash")
    assert bash is not None
    checked = subprocess.run([bash, "-n", "-c", script], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


# --- .env.example --------------------------------------------------------------------------


def test_env_example_lists_exactly_the_settings_the_code_reads() -> None:
    names = [entry.name for entry in env_example()]
    assert sorted(set(names)) == sorted(names), "a setting is listed twice"
    assert set(names) == code_env_names()


def test_every_setting_has_a_comment_marking_it_required_or_giving_its_default() -> None:
    for entry in env_example():
        assert entry.comment, f"{entry.name} has no comment"
        assert "Required" in entry.comment or "Default:" in entry.comment, entry.name


def test_only_required_settings_are_set_and_none_to_an_empty_optional_value() -> None:
    """A line left in (not commented out) is set in every container: it must be a required
    setting (empty: the process refuses to start, naming it) or one docker-compose.yml does
    not own. Optional settings stay commented out, so that unset means unset."""
    for entry in env_example():
        if entry.commented:
            continue
        assert entry.name not in COMPOSE_OWNED, entry.name
        assert entry.comment.startswith("Required"), f"{entry.name} is set but optional"
    for entry in env_example():
        if entry.name in COMPOSE_OWNED:
            assert entry.commented, f"{entry.name} is set per process by docker-compose.yml"


def field_defaults(name: str) -> list[tuple[Any, Any]]:
    """(annotation, default) of the field read from `name`, in every settings class."""
    found = []
    for cls in SERVICES_SETTINGS.values():
        for field_name, field in cls.model_fields.items():
            if field_name.upper() == name:
                found.append((field.annotation, field.default))
    return found


def test_commented_examples_show_the_codes_defaults() -> None:
    """Where every process has the same default, the commented-out example is that default:
    uncommenting it changes nothing."""
    checked = 0
    for entry in env_example():
        defaults = field_defaults(entry.name)
        values = {repr(default) for _, default in defaults}
        if not entry.commented or len(values) != 1:
            continue
        annotation, default = defaults[0]
        if default is None or default == ():
            continue
        value = TypeAdapter(annotation).validate_python(entry.value)
        assert value == default, f"{entry.name}={entry.value}: the default is {default!r}"
        checked += 1
    assert checked >= 10


def test_env_example_names_the_processes_settings_not_its_own() -> None:
    """Every name is a setting, never a variable of docker-compose.yml itself."""
    own = {name for name, _, _ in variables(COMPOSE_FILE.read_text())}
    assert own == {"SITEVIEW_ENV_FILE"}
    assert not own & {entry.name for entry in env_example()}
