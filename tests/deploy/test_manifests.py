"""deploy/ renders with kustomize, validates, and keeps the rules the processes depend on.

Both overlays are rendered by the kustomize that `make engines` builds (.tools/engines), then
checked: Kubernetes' JSON schemas in strict mode (kubernetes-validate), KEDA's ScaledObject
against our schema of the fields we use, and the rules below, each derived from the code where
the code says it (settings classes, consumer groups, topics, ports, readiness bounds).
"""

from __future__ import annotations

import copy
import functools
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from settings_catalog import SERVICES_SETTINGS, env_names

from siteview_common.cli import WORKER_PORT_OFFSET, WORKER_REQUIRED, api_required
from siteview_common.events import Topics
from siteview_common.runtime import WorkerSettings
from siteview_common.settings import MissingSettingError
from siteview_common.webapp import DEFAULT_CHECK_TIMEOUT_SECONDS
from siteview_devstack.engines import KUSTOMIZE_BIN, REPO, kustomize_is_provisioned
from siteview_payments.bootstrap import GROUP as PAYMENTS_GROUP
from siteview_users.bootstrap import GROUP as USERS_GROUP
from siteview_videos.bootstrap import GROUP as VIDEOS_GROUP
from siteview_videos.bootstrap import SPLATS_GROUP

Doc = dict[str, Any]

DEPLOY = REPO / "deploy"
OVERLAYS = ("dev", "prod")
PROD_SECRETS = DEPLOY / "overlays" / "prod" / "secrets.example"
KEDA_SCHEMA = json.loads((Path(__file__).parent / "keda_scaledobject.schema.json").read_text())
K8S_VERSION = "1.37.0"
UNSET_ANNOTATION = "siteview/unset-settings"
#: What each worker consumes: (consumer group, topic), as its bootstrap subscribes.
#: Each worker's subscriptions (consumer group, topic): it scales on every one's lag.
CONSUMERS = {
    "users": [(USERS_GROUP, Topics.USERS)],
    "payments": [(PAYMENTS_GROUP, Topics.BILLING)],
    "videos": [(VIDEOS_GROUP, Topics.USERS), (SPLATS_GROUP, Topics.SPLAT_STATUS)],
}
#: Who may reach each process type (NetworkPolicy peers: namespaces, by name).
ALLOWED_FROM = {"gateway": "ingress-nginx", "api": "ingress-nginx", "worker": "monitoring"}
SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def render(overlay: str) -> list[Doc]:
    """The overlay's objects (a fresh copy each call: tests may change them)."""
    return copy.deepcopy(_render(overlay))


@functools.cache
def _render(overlay: str) -> list[Doc]:
    if not kustomize_is_provisioned():
        pytest.fail(f"kustomize is not provisioned at {KUSTOMIZE_BIN}: run `make engines`")
    result = subprocess.run(
        [str(KUSTOMIZE_BIN), "build", str(DEPLOY / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kustomize build {overlay} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def docs(request: pytest.FixtureRequest) -> list[Doc]:
    return render(request.param)


def of_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def containers(deployment: Doc) -> list[Doc]:
    spec = deployment["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def deployments(docs: list[Doc]) -> Iterator[tuple[str, str, Doc]]:
    """(service, process, Deployment) for every Deployment."""
    for deployment in of_kind(docs, "Deployment").values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        yield labels["service"], labels["process"], deployment


def env_of(container: Doc) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines())
    return {p[0]: p[1] for p in pairs if len(p) == 2 and not p[0].startswith("#")}


def secret_data(docs: list[Doc], name: str) -> dict[str, str]:
    """A Secret's values: rendered (dev), or the example the operator copies (prod)."""
    secrets = of_kind(docs, "Secret")
    if name in secrets:
        return dict(secrets[name].get("stringData", {}))
    example = PROD_SECRETS / f"{name.removesuffix('-secrets')}.env"
    assert example.is_file(), f"Secret {name} is neither rendered nor documented in {example}"
    return read_env_file(example)


def environment(docs: list[Doc], container: Doc) -> tuple[dict[str, str], set[str]]:
    """What a container's process sees (envFrom, then env), and the settings its ConfigMaps
    declare as deliberately left unset."""
    configmaps = of_kind(docs, "ConfigMap")
    seen: dict[str, str] = {}
    unset: set[str] = set()
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            configmap = configmaps[source["configMapRef"]["name"]]
            seen.update(configmap.get("data", {}))
            annotations = configmap["metadata"].get("annotations", {})
            unset |= set(annotations.get(UNSET_ANNOTATION, "").split())
        else:
            seen.update(secret_data(docs, source["secretRef"]["name"]))
    seen.update(env_of(container))
    return seen, unset


# --- validity ------------------------------------------------------------------------------


def test_every_object_validates_against_its_schema(docs: list[Doc]) -> None:
    for doc in docs:
        if doc["kind"] == "ScaledObject":
            jsonschema.validate(doc, KEDA_SCHEMA)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validators_refuse_unknown_fields() -> None:
    """The schema checks above can fail: a misspelt field is refused by both."""
    docs = render("prod")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    scaled["spec"]["triggers"][0]["metadata"]["lagTreshold"] = "5"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, KEDA_SCHEMA)


# --- processes -----------------------------------------------------------------------------


def test_one_deployment_per_process_type(docs: list[Doc]) -> None:
    found = {(service, process) for service, process, _ in deployments(docs)}
    expected = {("webhooks", "gateway")} | {
        (service, process) for service in CONSUMERS for process in ("api", "worker")
    }
    assert found == expected
    for _, process, deployment in deployments(docs):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        # `siteview-<service> api|worker`; the gateway's command takes no argument.
        assert container.get("args") == (None if process == "gateway" else [process])


def test_every_container_is_locked_down(docs: list[Doc]) -> None:
    for _, _, deployment in deployments(docs):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, deployment["metadata"]["name"]
        # The image's user (Dockerfile: USER 10001) is numeric, so runAsNonRoot can verify it.
        assert pod["securityContext"]["runAsUser"] == 10001
        tmp_volumes = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        for container in containers(deployment):
            context = container.get("securityContext", {})
            for key, value in SECURITY_CONTEXT.items():
                assert context.get(key) == value, (deployment["metadata"]["name"], key)
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            writable_tmp = mounts.get("/tmp")  # noqa: S108 - the container's own emptyDir
            assert writable_tmp in tmp_volumes, "a writable /tmp on a read-only root"


def test_the_dockerfile_runs_as_a_numeric_non_root_user() -> None:
    users = [
        line.split()[1]
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    ]
    assert users and users[-1].isdigit() and int(users[-1]) != 0


def test_probes_and_ports(docs: list[Doc]) -> None:
    """Probes hit the process's own port (a worker's is its API's + 100), /healthz for
    liveness and /readyz for readiness, and wait longer than the readiness check's bound."""
    for service, process, deployment in deployments(docs):
        settings_class = SERVICES_SETTINGS[service]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        seen, _ = environment(docs, container)
        default_port = settings_class.model_fields["port"].default
        port = default_port + (WORKER_PORT_OFFSET if process == "worker" else 0)
        assert seen["PORT"] == str(port), deployment["metadata"]["name"]
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        if process == "api":
            # An API's readiness check is bounded by its database timeout.
            bound = float(
                seen.get("MONGODB_TIMEOUT_SECONDS")
                or WorkerSettings.model_fields["mongodb_timeout_seconds"].default
            )
        else:
            bound = DEFAULT_CHECK_TIMEOUT_SECONDS
        for kind, path in (
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("startupProbe", "/healthz"),
        ):
            probe = container[kind]
            assert probe["httpGet"]["path"] == path, (deployment["metadata"]["name"], kind)
            assert named.get(probe["httpGet"]["port"], probe["httpGet"]["port"]) == port
            assert probe["timeoutSeconds"] > bound, (deployment["metadata"]["name"], kind)


def test_requests_and_limits(docs: list[Doc]) -> None:
    for _, _, deployment in deployments(docs):
        for container in containers(deployment):
            resources = container["resources"]
            for side in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(side, {})), (
                    deployment["metadata"]["name"],
                    side,
                )


def test_images_come_from_a_registry_with_an_immutable_tag(docs: list[Doc]) -> None:
    for service, _, deployment in deployments(docs):
        for container in containers(deployment):
            image = container["image"]
            registry, _, rest = image.partition("/")
            assert rest and ("." in registry or ":" in registry), f"no registry: {image}"
            name, _, tag = rest.rpartition(":")
            assert "@sha256:" in image or (tag and tag != "latest"), f"mutable tag: {image}"
            assert name.endswith(service), image


# --- scaling -------------------------------------------------------------------------------


def test_autoscalers_own_the_replica_count(docs: list[Doc]) -> None:
    deployments_by_name = of_kind(docs, "Deployment")
    owners: dict[str, str] = {}
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for name, scaler in of_kind(docs, kind).items():
            target = scaler["spec"]["scaleTargetRef"]["name"]
            assert target in deployments_by_name, f"{kind} {name} scales nothing"
            assert target not in owners, f"{target} scaled twice"
            owners[target] = kind
    for _, process, deployment in deployments(docs):
        name = deployment["metadata"]["name"]
        expected = "ScaledObject" if process == "worker" else "HorizontalPodAutoscaler"
        assert owners.get(name) == expected, name
        assert "replicas" not in deployment["spec"], f"{name}: a fixed count fights the {expected}"
    for hpa in of_kind(docs, "HorizontalPodAutoscaler").values():
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"


def test_workers_scale_on_their_own_lag(docs: list[Doc]) -> None:
    """Group and topic are the ones the worker consumes; never more pods than partitions."""
    deployments_by_name = of_kind(docs, "Deployment")
    scaled = of_kind(docs, "ScaledObject")
    assert set(scaled) == {f"{service}-worker" for service in CONSUMERS}
    for service, subscriptions in CONSUMERS.items():
        spec = scaled[f"{service}-worker"]["spec"]
        triggers = spec["triggers"]
        assert {t["type"] for t in triggers} == {"kafka"}
        assert [(t["metadata"]["consumerGroup"], t["metadata"]["topic"]) for t in triggers] == (
            subscriptions
        )
        (container,) = deployments_by_name[f"{service}-worker"]["spec"]["template"]["spec"][
            "containers"
        ]
        seen, _ = environment(docs, container)
        for trigger in triggers:
            assert trigger["metadata"]["bootstrapServers"] == seen["KAFKA_BOOTSTRAP_SERVERS"]
        partitions = int(seen["KAFKA_TOPIC_PARTITIONS"])
        assert partitions == 12
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions


def test_every_deployment_has_a_disruption_budget(docs: list[Doc]) -> None:
    budgets = list(of_kind(docs, "PodDisruptionBudget").values())
    for _, _, deployment in deployments(docs):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(matching) == 1, deployment["metadata"]["name"]


# --- configuration -------------------------------------------------------------------------


def test_every_setting_reaches_every_process_that_reads_it(
    docs: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each setting of a service's settings class is set (ConfigMap, Secret or the
    container's env) or declared unset on purpose in the ConfigMap's annotation; and the
    process's settings then load with everything it requires at start."""
    for service, process, deployment in deployments(docs):
        settings_class = SERVICES_SETTINGS[service]
        name = deployment["metadata"]["name"]
        for container in containers(deployment):
            seen, unset = environment(docs, container)
            wanted = env_names(settings_class)
            assert not (missing := wanted - set(seen) - unset), f"{name} lacks {sorted(missing)}"
            assert not (both := unset & set(seen)), f"{name}: set and declared unset: {both}"
            assert unset <= wanted, f"{name}: declared unset but never read: {unset - wanted}"
            for variable in wanted | set(seen):
                monkeypatch.delenv(variable, raising=False)
            for variable, value in seen.items():
                monkeypatch.setenv(variable, value)
            settings = settings_class()
            if process == "gateway":
                required: tuple[str, ...] = ("kafka_servers", "webhook_secrets")
            elif process == "api":
                required = api_required(settings_class)
            else:
                required = WORKER_REQUIRED
            for attribute in required:
                try:
                    getattr(settings, attribute)  # what the process resolves at start
                except MissingSettingError as exc:
                    pytest.fail(f"{name} would not start: {exc}")


def test_one_secret_per_service_with_its_own_database_user(docs: list[Doc]) -> None:
    references: dict[str, set[str]] = {}
    for service, _, deployment in deployments(docs):
        for container in containers(deployment):
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    references.setdefault(source["secretRef"]["name"], set()).add(service)
    assert references == {f"{service}-secrets": {service} for service in SERVICES_SETTINGS}
    urls = {}
    for service in CONSUMERS:
        data = secret_data(docs, f"{service}-secrets")
        url = data["MONGODB_URL"]
        user = url.split("://", 1)[1].split(":", 1)[0]
        assert user == service, f"{service} connects as {user!r}"
        urls[service] = url
    assert len(set(urls.values())) == len(urls)
    assert "MONGODB_URL" not in secret_data(docs, "webhooks-secrets")


def test_secrets_are_placeholders_and_prod_renders_none() -> None:
    prod = render("prod")
    assert not of_kind(prod, "Secret"), "the prod overlay must never overwrite real Secrets"
    dev = render("dev")
    for service in SERVICES_SETTINGS:
        rendered = of_kind(dev, "Secret")[f"{service}-secrets"]["stringData"]
        example = read_env_file(PROD_SECRETS / f"{service}.env")
        assert set(example) == set(rendered), service
        for values in (rendered, example):
            assert all("REPLACE_ME" in value for value in values.values()), service
    ignored = (DEPLOY / "overlays" / "prod" / ".gitignore").read_text().split()
    assert "secrets/" in ignored


# --- network -------------------------------------------------------------------------------


def test_network_policies(docs: list[Doc]) -> None:
    """All ingress is denied but: the gateway and the APIs from the ingress controller, the
    workers from the metrics scrape, each on its own port only."""
    policies = of_kind(docs, "NetworkPolicy")
    deny = policies.pop("default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    covered = set()
    for _, process, deployment in deployments(docs):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        port = container["ports"][0]["containerPort"]
        selecting = [
            (name, p)
            for name, p in policies.items()
            if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(selecting) == 1, deployment["metadata"]["name"]
        name, policy = selecting[0]
        covered.add(name)
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        (rule,) = policy["spec"]["ingress"]
        assert rule["from"] == [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": ALLOWED_FROM[process]}
                }
            }
        ], name
        assert rule["ports"] == [{"protocol": "TCP", "port": port}], name
    assert covered == set(policies), f"policies selecting no pod: {set(policies) - covered}"


def test_ingress_routes_clerk_to_the_gateway_and_the_frontend_to_the_apis(
    docs: list[Doc],
) -> None:
    services = of_kind(docs, "Service")
    (ingress,) = of_kind(docs, "Ingress").values()
    routes = {}
    for rule in ingress["spec"]["rules"]:
        assert rule["host"]
        for path in rule["http"]["paths"]:
            routes[path["path"]] = path["backend"]["service"]["name"]
    assert routes["/webhooks/clerk"] == "webhooks-gateway"
    assert routes["/clerk-users-webhook"] == "webhooks-gateway"
    assert {routes[p] for p in ("/users", "/payments", "/subscriptions", "/videos")} == {
        "users-api",
        "payments-api",
        "videos-api",
    }
    assert not any(p.startswith(("/metrics", "/healthz", "/readyz", "/docs")) for p in routes)
    for backend in set(routes.values()):
        selector = services[backend]["spec"]["selector"]
        assert selector["process"] in ("gateway", "api"), backend
    assert not any(s["spec"]["selector"]["process"] == "worker" for s in services.values())
