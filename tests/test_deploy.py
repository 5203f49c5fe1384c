"""deploy/: the kustomize base and its overlays (kustomize Components) as kubectl renders them.

Every variant is built with `kubectl kustomize`; every rendered object must validate against
the official schemas of each Kubernetes minor from 1.30 to the newest kubernetes-validate
ships; the RBAC must be exactly what syncer/kube.py calls; the pods must meet the
"restricted" Pod Security Standard; and the config each variant mounts must pass
`endpoints-sync validate` at the paths the pod would see it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from syncer import kube
from tests.cli import ROOT, cli

DEPLOY = ROOT / "deploy"
OVERLAYS = DEPLOY / "overlays"
INTERVAL = 300  # the CronJob's schedule, */5, and the Deployment's --interval
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
CONTAINER = "endpoints-sync"

# variant -> the overlays (Components) it adds to the base, in the documented order
VARIANTS: dict[str, tuple[str, ...]] = {
    "base": (),
    "namespaced": ("namespaced",),
    "consul-token": ("consul-token",),
    "aws-irsa": ("aws-irsa",),
    "deployment": ("deployment",),
    "deployment+consul-token": ("deployment", "consul-token"),
}

Obj = dict[str, Any]


@cache
def rendered(variant: str) -> tuple[Obj, ...]:
    """`kubectl kustomize` of the base plus the variant's Components, as a user's own
    kustomization outside the clone would combine them (paths must be relative)."""
    components = VARIANTS[variant]
    if not components:
        return _kustomize(DEPLOY)
    with tempfile.TemporaryDirectory() as work:
        target = Path(work)
        (target / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(DEPLOY, target)],
            "components": [os.path.relpath(OVERLAYS / c, target) for c in components],
        }))
        return _kustomize(target)


def _kustomize(directory: Path) -> tuple[Obj, ...]:
    done = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return tuple(o for o in yaml.safe_load_all(done.stdout) if o)


def of_kind(objs: tuple[Obj, ...], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def pod_templates(objs: tuple[Obj, ...]) -> list[Obj]:
    """The pod templates of the CronJobs and Deployments."""
    pods = [o["spec"]["jobTemplate"]["spec"]["template"] for o in of_kind(objs, "CronJob")]
    pods += [o["spec"]["template"] for o in of_kind(objs, "Deployment")]
    return pods


def the_container(pod: Obj) -> Obj:
    (container,) = pod["spec"]["containers"]
    assert container["name"] == CONTAINER
    return dict(container)


def config_map(objs: tuple[Obj, ...]) -> Obj:
    (cm,) = of_kind(objs, "ConfigMap")
    return cm


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def schema_versions() -> list[str]:
    """1.30 .. the newest minor kubernetes-validate ships."""
    minors = {_minor(v) for v in kubernetes_validate.utils.all_versions()}
    return [f"{a}.{b}" for a, b in sorted(minors) if (a, b) >= (1, 30)]


# --- building -----------------------------------------------------------------------------


def test_every_overlay_is_built_here() -> None:
    """A new overlay directory cannot escape these tests."""
    on_disk = {p.name for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").is_file()}
    used = {c for cs in VARIANTS.values() for c in cs}
    assert on_disk == used


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_builds_one_runner_in_our_namespace(variant: str) -> None:
    objs = rendered(variant)
    runners = of_kind(objs, "CronJob") + of_kind(objs, "Deployment")
    assert [r["kind"] for r in runners] == (["Deployment"] if "deployment" in variant
                                           else ["CronJob"])
    for o in objs:
        if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding", "Role",
                             "RoleBinding"):
            assert o["metadata"].get("namespace") == "endpoints-sync", o["metadata"]


@pytest.mark.slow
@pytest.mark.parametrize("version", schema_versions())
def test_every_object_validates_against_the_official_schemas(version: str) -> None:
    """Strict: an unknown field (a typo, a field of a newer minor) fails too."""
    assert schema_versions()[-1] == ".".join(
        map(str, _minor(kubernetes_validate.utils.latest_version())))
    distinct = {json.dumps(o, sort_keys=True): o for v in VARIANTS for o in rendered(v)}
    for obj in distinct.values():
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} ({version}): {e.message}")


def test_the_schema_check_refuses_an_unknown_field() -> None:
    """The validation above can fail: a misspelt CronJob field is refused."""
    cronjob = json.loads(json.dumps(of_kind(rendered("base"), "CronJob")[0]))
    cronjob["spec"]["timezone"] = cronjob["spec"].pop("timeZone")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cronjob, schema_versions()[0], strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_image_is_the_one_the_readme_builds(variant: str) -> None:
    """`docker build -t endpoints-sync:VERSION .`; `kustomize edit set image` replaces it."""
    for pod in pod_templates(rendered(variant)):
        container = the_container(pod)
        assert container["image"] == f"endpoints-sync:{VERSION}"
        assert container["imagePullPolicy"] == "IfNotPresent"


# --- RBAC ---------------------------------------------------------------------------------

# Events (syncer/events.py through Kube.create_event) are created, never patched.
EVENT_RULES = {("events.k8s.io", "events", "create")}


def rules_the_code_needs() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every call syncer/kube.py can make."""
    needed = set()
    for _api, _suffix, resource in kube._KINDS.values():
        name, _, group = resource.partition(".")
        needed |= {(group, name, verb) for verb in kube._RBAC_VERBS.values()}
    return needed | EVENT_RULES


def granted(role: Obj) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}


def test_cluster_role_grants_exactly_what_the_code_calls() -> None:
    objs = rendered("base")
    (role,) = of_kind(objs, "ClusterRole")
    assert granted(role) == rules_the_code_needs()
    assert all(not rule.get("resourceNames") and "*" not in rule["verbs"]
               for rule in role["rules"])
    (binding,) = of_kind(objs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [service_account_subject(objs)]


def test_rbac_rule_set_is_what_kube_py_uses() -> None:
    """Pinned, so that a verb the code starts using (patch, watch) is a conscious change."""
    assert rules_the_code_needs() == {
        (group, resource, verb)
        for group, resource in (("", "services"), ("", "endpoints"),
                                ("discovery.k8s.io", "endpointslices"))
        for verb in ("get", "list", "watch", "create", "update", "delete")} | EVENT_RULES


def service_account_subject(objs: tuple[Obj, ...]) -> Obj:
    (sa,) = of_kind(objs, "ServiceAccount")
    for pod in pod_templates(objs):
        assert pod["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    return {"kind": "ServiceAccount", "name": sa["metadata"]["name"],
            "namespace": sa["metadata"]["namespace"]}


def test_namespaced_overlay_has_a_role_per_configured_namespace_and_no_cluster_role() -> None:
    objs = rendered("namespaced")
    assert not of_kind(objs, "ClusterRole") and not of_kind(objs, "ClusterRoleBinding")
    config = yaml.safe_load(config_map(objs)["data"]["config.yaml"])
    namespaces = config["namespaces"]
    assert namespaces
    roles = {r["metadata"]["namespace"]: r for r in of_kind(objs, "Role")}
    bindings = {b["metadata"]["namespace"]: b for b in of_kind(objs, "RoleBinding")}
    assert set(roles) == set(bindings) == set(namespaces)
    for ns in namespaces:
        assert granted(roles[ns]) == rules_the_code_needs()
        assert bindings[ns]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                           "kind": "Role",
                                           "name": roles[ns]["metadata"]["name"]}
        assert bindings[ns]["subjects"] == [service_account_subject(objs)]


# --- the pod ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_pod_meets_the_restricted_pod_security_standard(variant: str) -> None:
    objs = rendered(variant)
    (namespace,) = of_kind(objs, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = pod_templates(objs)
    assert pods
    for pod in pods:
        spec = pod["spec"]
        assert spec["securityContext"] == {
            "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"}}
        assert not ({"hostNetwork", "hostPID", "hostIPC"} & set(spec))
        container = the_container(pod)
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}}
        assert not any("hostPath" in v for v in spec["volumes"])
        # The one writable place: /tmp, an emptyDir (the image's HOME and TMPDIR).
        volumes = {v["name"]: v for v in spec["volumes"]}
        writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
        assert [m["mountPath"] for m in writable] == ["/tmp"]
        assert "emptyDir" in volumes[writable[0]["name"]]
        resources = container["resources"]
        assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_secret_in_the_manifests(variant: str) -> None:
    """Tokens come as files from Secrets the operator creates; never an env var, never a
    Secret object or a token in the ConfigMap of the repository."""
    objs = rendered(variant)
    assert not of_kind(objs, "Secret")
    for pod in pod_templates(objs):
        container = the_container(pod)
        assert all("valueFrom" not in e and "envFrom" not in container
                   for e in container.get("env", []))
        assert [e["name"] for e in container["env"]] == ["ENDPOINTS_SYNC_CONFIG"]
    config = yaml.safe_load(config_map(objs)["data"]["config.yaml"])
    for source in config["sources"]:
        assert "token" not in source


def test_cronjob_runs_every_five_minutes_and_gives_up_on_a_bad_config() -> None:
    (cronjob,) = of_kind(rendered("base"), "CronJob")
    spec = cronjob["spec"]
    assert spec["schedule"] == "*/5 * * * *"
    assert spec["timeZone"] == "Etc/UTC"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] < INTERVAL
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert 0 < job["activeDeadlineSeconds"] < INTERVAL  # a hung run ends before the next
    assert job["backoffLimit"] <= 2
    assert job["ttlSecondsAfterFinished"] > 0
    # Exit 2 (bad config or command line) fails the Job at once: a retry would not fix it.
    fail_job = [r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert [r["onExitCodes"] for r in fail_job] == [
        {"containerName": CONTAINER, "operator": "In", "values": [2]}]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy requires it
    assert the_container(job["template"])["args"][0] == "run"


def test_deployment_overlay_runs_watch_mode_with_probes() -> None:
    objs = rendered("deployment")
    (deployment,) = of_kind(objs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert spec["selector"]["matchLabels"].items() <= \
        spec["template"]["metadata"]["labels"].items()
    container = the_container(spec["template"])
    args = container["args"]
    assert args[0] == "run" and args[args.index("--interval") + 1] == str(INTERVAL)
    assert "--watch" in args  # changes within seconds; the interval is the full resync
    assert args[args.index("--metrics-port") + 1] == "9090"
    assert {"name": "metrics", "containerPort": 9090} in container["ports"]
    # The loop's own health endpoints (tests/test_loop.py proves what they answer).
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    # The pod is the CronJob's: same security, resources and mounts.
    (cron_pod,) = pod_templates(rendered("base"))
    for key in ("securityContext", "serviceAccountName", "volumes"):
        assert spec["template"]["spec"][key] == cron_pod["spec"][key]
    cron_container = the_container(cron_pod)
    for key in ("securityContext", "resources", "volumeMounts", "env", "image"):
        assert container[key] == cron_container[key]


def test_consul_token_comes_from_a_secret_file_in_both_runners() -> None:
    for variant in ("consul-token", "deployment+consul-token"):
        objs = rendered(variant)
        (pod,) = pod_templates(objs)
        (source,) = yaml.safe_load(config_map(objs)["data"]["config.yaml"])["sources"]
        assert source["provider"] == "consul"
        token_file = Path(source["token_file"])
        mounts = {m["name"]: m for m in the_container(pod)["volumeMounts"]}
        (volume,) = [v for v in pod["spec"]["volumes"] if "secret" in v]
        mount = mounts[volume["name"]]
        assert mount["readOnly"] is True
        item = {i["path"]: i for i in volume["secret"]["items"]}
        assert token_file.parent == Path(mount["mountPath"]) and token_file.name in item
        assert volume["secret"]["defaultMode"] & 0o007 == 0  # not world-readable


def test_aws_irsa_overlay_annotates_the_service_account() -> None:
    objs = rendered("aws-irsa")
    (sa,) = of_kind(objs, "ServiceAccount")
    arn = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert arn.startswith("arn:aws:iam::") and ":role/" in arn
    providers = {s["provider"] for s in
                 yaml.safe_load(config_map(objs)["data"]["config.yaml"])["sources"]}
    assert providers <= {"aws_ec2", "aws_rds"} and providers


# --- the config, as the pod sees it -------------------------------------------------------


def pod_filesystem(objs: tuple[Obj, ...], pod: Obj, root: Path) -> dict[str, str]:
    """Lay out the container's mounts under `root`: ConfigMap files, Secret items (a dummy
    token), emptyDirs. Returns the container's env with absolute paths moved under root."""
    container = the_container(pod)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    cm = config_map(objs)
    mounts = sorted(m["mountPath"] for m in container["volumeMounts"])
    for mount in container["volumeMounts"]:
        where = root / mount["mountPath"].lstrip("/")
        where.mkdir(parents=True, exist_ok=True)
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            assert volume["configMap"]["name"] == cm["metadata"]["name"]
            for key, text in cm["data"].items():
                (where / key).write_text(_under(text, mounts, root))
        elif "secret" in volume:
            for item in volume["secret"]["items"]:
                (where / item["path"]).write_text("6c0c5a43-0d4e-4f3c-9a57-3c1d2b9a7e10\n")
        else:
            assert "emptyDir" in volume
    return {e["name"]: _under(e["value"], mounts, root) for e in container["env"]}


def _under(text: str, mounts: list[str], root: Path) -> str:
    """Absolute paths into a mount moved under root (one pass: root may itself be in /tmp)."""
    pattern = "|".join(re.escape(m) for m in sorted(mounts, key=len, reverse=True))
    return re.sub(rf"(?<![\w./-])({pattern})(?=/)", lambda m: f"{root}{m[1]}", text)


def probe_commands(pod: Obj) -> Iterator[list[str]]:
    container = the_container(pod)
    for probe in ("readinessProbe", "livenessProbe"):
        if "exec" in container.get(probe, {}):
            yield container[probe]["exec"]["command"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_mounted_config_passes_validate(variant: str, tmp_path: Path) -> None:
    """`endpoints-sync validate` with the pod's environment and mounts (and the Deployment's
    probe commands as written) accepts the config: a run would not exit 2."""
    objs = rendered(variant)
    (pod,) = pod_templates(objs)
    env = pod_filesystem(objs, pod, tmp_path)
    assert Path(env["ENDPOINTS_SYNC_CONFIG"]).is_file()
    commands = list(probe_commands(pod)) or [["endpoints-sync", "validate"]]
    for command in {tuple(c) for c in commands}:
        assert command[0] == "endpoints-sync"
        done = cli(*command[1:], env=env)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_validate_in_the_pod_filesystem_can_fail(tmp_path: Path) -> None:
    """The check above can fail: without the Secret's file the consul config is refused."""
    objs = rendered("consul-token")
    (pod,) = pod_templates(objs)
    env = pod_filesystem(objs, pod, tmp_path)
    (token,) = tmp_path.glob("var/run/secrets/**/token")
    token.unlink()
    done = cli("validate", env=env)
    assert done.returncode == 2 and "token_file" in done.stderr
