"""The deployment files under cluster/ are checked like code: every YAML parses, every job command
line they (or cluster/README.md) contain is accepted by that job's own ``parse_args``, every
``ray job submit`` line by Ray's CLI, and the GPU worker groups fit the config they run."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shlex
from pathlib import Path

import pytest
import yaml

from dnr.config import load_config

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
KUBERAY = CLUSTER / "kuberay"
DAILY_CONFIG = "cluster/configs/daily_gpu.yaml"
YAML_FILES = sorted(CLUSTER.rglob("*.yaml"))
TEXT_FILES = sorted(p for p in CLUSTER.rglob("*") if p.is_file() and p.suffix in (".yaml", ".md", "")
                    or p.name == "Dockerfile")
GPU = "nvidia.com/gpu"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _all_docs() -> list[dict]:
    return [d for p in sorted(KUBERAY.glob("*.yaml")) for d in _docs(p)]


def _one(kind: str) -> dict:
    (doc,) = [d for d in _all_docs() if d["kind"] == kind]
    return doc


def _strings(node):
    """Every string value of a parsed YAML tree (entrypoints, args, runtimeEnvYAML...)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def _find_key(node, key):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _find_key(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from _find_key(v, key)


def _command_texts() -> list[tuple[str, str]]:
    """(where, text) to search for command lines: YAML string values (folded scalars joined),
    YAML comments, and the README, with shell line continuations joined."""
    texts = []
    for path in YAML_FILES:
        where = path.relative_to(REPO).as_posix()
        for doc in _docs(path):
            texts += [(where, s) for s in _strings(doc)]
        comments = [line.split("#", 1)[1][1:] for line in path.read_text().splitlines()
                    if line.lstrip().startswith("#")]
        texts.append((where + " (comments)", "\n".join(comments)))
    for path in CLUSTER.rglob("*.md"):
        texts.append((path.relative_to(REPO).as_posix(), path.read_text()))
    return [(where, re.sub(r"\\\n\s*", " ", text)) for where, text in texts]


_JOB_CMD = re.compile(r"python3?\s+(?:\S*/)?jobs/([A-Za-z0-9_]+)\.py([^\n`;&|)]*)")


def _job_commands() -> list[tuple[str, str, list[str]]]:
    return [(where, m.group(1), shlex.split(m.group(2)))
            for where, text in _command_texts() for m in _JOB_CMD.finditer(text)]


def _submit_commands() -> list[tuple[str, list[str]]]:
    """``ray job submit <options> -- <entrypoint>``: (where, options + ['--', 'true'])."""
    found = []
    for where, text in _command_texts():
        for m in re.finditer(r"ray job submit((?:(?!\s--\s)[^\n`])*)\s--\s", text):
            found.append((where, shlex.split(m.group(1)) + ["--", "true"]))
    return found


def _load_job(name: str):
    path = REPO / "jobs" / f"{name}.py"
    assert path.exists(), f"a manifest names jobs/{name}.py, which does not exist"
    spec = importlib.util.spec_from_file_location(f"_manifest_job_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert hasattr(module, "parse_args"), f"jobs/{name}.py has no parse_args(argv)"
    return module


# ---- every file parses; every command line is accepted ----

@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(CLUSTER).as_posix())
def test_every_yaml_parses(path):
    docs = _docs(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        for text in _find_key(doc, "runtimeEnvYAML"):  # YAML inside YAML
            assert isinstance(yaml.safe_load(text), dict), f"{path}: runtimeEnvYAML is not a mapping"


def test_every_job_command_line_is_accepted_by_its_job():
    commands = _job_commands()
    assert {name for _, name, _ in commands} >= {"train_daily"}
    for where, name, argv in commands:
        job = _load_job(name)
        try:
            args = job.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: jobs/{name}.py rejects {shlex.join(argv)}")
        config = getattr(args, "config", None)
        if config:
            assert (REPO / config).exists(), f"{where}: --config {config} does not exist"
            load_config(REPO / config, getattr(args, "overrides", []) or [])  # keys and values valid


def test_the_manifests_run_the_daily_job_with_the_gpu_config():
    for kind in ("RayJob", "RayCronJob", "CronJob"):
        text = json.dumps(_one(kind))
        assert "jobs/train_daily.py" in text and f"--config {DAILY_CONFIG}" in text, kind


def test_every_ray_job_submit_line_is_accepted_by_ray():
    from ray.dashboard.modules.job.cli import submit

    commands = _submit_commands()
    assert any("cronjob-submit" in where for where, _ in commands)
    for where, argv in commands:
        try:
            params = submit.make_context("submit", list(argv)).params
        except Exception as err:  # click.UsageError and friends
            pytest.fail(f"{where}: `ray job submit {shlex.join(argv)}`: {err}")
        if params["runtime_env"]:
            assert (REPO / params["runtime_env"]).exists(), f"{where}: {params['runtime_env']}"


def test_the_cronjob_submits_without_waiting_under_a_dated_submission_id():
    cron = _one("CronJob")
    (where, argv), = [(w, a) for w, a in _submit_commands() if w == "cluster/kuberay/cronjob-submit.yaml"]
    assert "--no-wait" in argv
    submission_id = argv[argv.index("--submission-id") + 1]
    assert re.fullmatch(r"train-daily-\$\(date -u \+%Y-%m-%d\)", submission_id), submission_id
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    _cron_fields(cron["spec"]["schedule"])
    env = _env(cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0])
    address = env["RAY_API_SERVER_ADDRESS"]["value"]
    assert address.startswith(f"http://{_one('RayCluster')['metadata']['name']}-head-svc.")


def _cron_fields(schedule: str) -> None:
    fields = schedule.split()
    assert len(fields) == 5 and all(re.fullmatch(r"[0-9*/,-]+", f) for f in fields), schedule


# ---- KubeRay objects ----

def _cluster_specs() -> dict[str, dict]:
    return {"RayCluster": _one("RayCluster")["spec"],
            "RayCronJob": _one("RayCronJob")["spec"]["jobTemplate"]["rayClusterSpec"]}


def _containers(node) -> list[dict]:
    return [c for lst in _find_key(node, "containers") for c in lst]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _cpus(quantity) -> float:
    q = str(quantity)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def test_kuberay_objects_use_the_documented_fields():
    cluster, job, cron = _one("RayCluster"), _one("RayJob"), _one("RayCronJob")
    for doc in (cluster, job, cron):
        assert doc["apiVersion"] == "ray.io/v1"
    modes = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
    # the RayJob runs on the existing cluster and must not delete it
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert job["spec"]["shutdownAfterJobFinishes"] is False and "rayClusterSpec" not in job["spec"]
    assert job["spec"]["submissionMode"] in modes
    # the RayCronJob's RayJobs bring their own cluster and delete it afterwards
    template = cron["spec"]["jobTemplate"]
    _cron_fields(cron["spec"]["schedule"])
    assert "spec" not in template and template["shutdownAfterJobFinishes"] is True
    assert template["submissionMode"] in modes and "clusterSelector" not in template
    for spec in _cluster_specs().values():
        assert {"headGroupSpec", "workerGroupSpecs", "rayVersion"} <= set(spec)


def test_one_image_and_one_ray_version_everywhere():
    images = {c["image"] for d in _all_docs() for c in _containers(d)}
    assert len(images) == 1, f"different images across cluster/kuberay: {images}"
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    ray_version = re.search(r"ARG RAY_VERSION=(\S+)", dockerfile).group(1)
    assert {spec["rayVersion"] for spec in _cluster_specs().values()} == {ray_version}
    assert f'"ray[default,train,data]=={ray_version}"' in (CLUSTER / "aws.yaml").read_text()
    # the image's torch is the CI pin, in a CUDA build
    ci_torch = re.search(r"torch==(\S+)", (REPO / ".ci" / "run").read_text()).group(1)
    assert re.search(r"ARG TORCH_VERSION=(\S+)", dockerfile).group(1) == ci_torch
    assert "download.pytorch.org/whl/${TORCH_CUDA}" in dockerfile
    assert re.search(r"ARG TORCH_CUDA=cu\d+", dockerfile)


def test_the_runtime_env_is_the_same_file_everywhere():
    expected = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    assert expected["working_dir"] == "." and "pip" not in expected
    inline = [_one("RayJob")["spec"]["runtimeEnvYAML"],
              _one("RayCronJob")["spec"]["jobTemplate"]["runtimeEnvYAML"]]
    for text in inline:
        assert yaml.safe_load(text) == expected


def test_gpu_containers_request_gpus_in_requests_and_limits():
    gpu_containers = 0
    for doc in _all_docs():
        for c in _containers(doc):
            res = c.get("resources", {})
            requests, limits = res.get("requests", {}), res.get("limits", {})
            if GPU in requests or GPU in limits:
                gpu_containers += 1
                assert str(requests.get(GPU)) == str(limits.get(GPU)), c["name"]
                assert _cpus(requests["cpu"]) == _cpus(limits["cpu"]), c["name"]
    assert gpu_containers == 2  # the GPU group of the RayCluster and of the RayCronJob's cluster


@pytest.mark.parametrize("owner", ["RayCluster", "RayCronJob"])
def test_the_gpu_worker_group_fits_the_daily_config_and_its_scaling_config(owner):
    from ray.train import ScalingConfig

    cfg = load_config(REPO / DAILY_CONFIG)
    assert cfg.train.use_gpu
    # as dnr/daily/run.py builds it
    scaling = ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
                            resources_per_worker={"CPU": cfg.train.cpus_per_worker})
    per_worker = scaling._resources_per_worker_not_none  # Ray's resolution: {"CPU": 4.0, "GPU": 1}
    spec = _cluster_specs()[owner]
    assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0"
    (group,) = [g for g in spec["workerGroupSpecs"] if GPU in json.dumps(g)]
    (container,) = group["template"]["spec"]["containers"]
    limits = container["resources"]["limits"]
    gpus, cpus = int(limits[GPU]), _cpus(limits["cpu"])
    autoscaled = spec.get("enableInTreeAutoscaling", False)
    pods = group["maxReplicas"] if autoscaled else group["replicas"]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    per_pod = min(gpus // per_worker["GPU"], math.floor(cpus / per_worker["CPU"]))
    assert per_pod * pods >= scaling.num_workers, (
        f"{owner}: {pods} pods x {per_pod} Train workers < train.num_workers={scaling.num_workers}")
    assert cpus - per_pod * per_worker["CPU"] >= 1, f"{owner}: no CPU left on a GPU pod for Ray Data"
    assert cfg.gate.num_scorers <= pods * gpus, "replay scoring actors take one GPU each"


def test_the_ray_up_config_is_valid_and_its_spot_gpu_nodes_fit_the_daily_config():
    import jsonschema
    import ray

    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    jsonschema.validate(config, json.loads(schema_path.read_text()))
    cfg = load_config(REPO / DAILY_CONFIG)
    gpu_types = {n: t for n, t in config["available_node_types"].items() if t["resources"].get("GPU")}
    (node,) = gpu_types.values()
    assert node["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    per_node = min(node["resources"]["GPU"], math.floor(node["resources"]["CPU"] / cfg.train.cpus_per_worker))
    assert per_node * min(node["max_workers"], config["max_workers"]) >= cfg.train.num_workers
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    assert config["file_mounts"]["/home/ubuntu/dnr"] == "."  # ray up runs from the repo root
    setup = "\n".join(config["setup_commands"])
    assert '-e "$HOME/dnr[train]"' in setup and "download.pytorch.org/whl/cu" in setup
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)


# ---- secrets are referenced, never inlined ----

_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|ACCESS_KEY|CREDENTIAL", re.I)
_SECRET_LITERAL = [
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),                  # AWS access key id
    re.compile(r"aws_secret_access_key\s*[:=]\s*\S", re.I),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"(?<![0-9A-Za-z])[0-9a-f]{32,}(?![0-9A-Za-z])"),     # a hex token
    re.compile(r"--from-literal=\S+=['\"]?[A-Za-z0-9]"),           # a literal secret in a command
]


def _key_like(word: str) -> bool:
    """A long mixed-case alphanumeric blob (an AWS secret key, a base64 token), not a path."""
    return (len(word) >= 32 and word.count("/") <= 2 and any(c.isupper() for c in word)
            and any(c.islower() for c in word) and any(c.isdigit() for c in word))


def test_secrets_are_referenced_not_inlined():
    for doc in _all_docs():
        for c in _containers(doc):
            for name, entry in _env(c).items():
                if _SECRET_NAME.search(name) and name != "RAY_AUTH_MODE":
                    assert "value" not in entry and "secretKeyRef" in entry.get("valueFrom", {}), (
                        f"{doc['kind']} container {c['name']}: {name} must come from a Secret")
    for path in TEXT_FILES:
        text = path.read_text()
        for pattern in _SECRET_LITERAL:
            hit = pattern.search(text)
            assert hit is None, f"{path.relative_to(REPO)}: credential-looking literal {hit.group(0)!r}"
        for word in re.findall(r"[A-Za-z0-9/+=_-]{32,}", text):
            assert not _key_like(word), f"{path.relative_to(REPO)}: credential-looking literal {word!r}"


def test_every_ray_container_and_client_uses_token_auth_from_the_secret():
    secrets = set()
    for doc in _all_docs():
        clients = [doc["spec"]["autoscalerOptions"]] if doc["kind"] == "RayCluster" else []
        for c in _containers(doc) + clients:
            env = _env(c)
            assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", (doc["kind"], c.get("name"))
            secrets.add(env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"])
    assert len(secrets) == 1, secrets
