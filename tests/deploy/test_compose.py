"""docker-compose.yaml and include/deploy/, checked without a Docker engine.

What a user of `docker compose --profile demo up` relies on, proven here piece by piece:

- Compose accepts the file (Debian's docker-compose, or the docker CLI plugin when present).
- It has the official file's shape: the services, their health checks, one image for every Airflow
  service, components started only after airflow-init, and nothing outside the demo profile needing it.
- Everything it names exists: host paths it mounts, modules its commands run, Airflow subcommands and
  config options (parsed by Airflow itself, with the file's own environment and airflow.cfg), the
  variables the product reads, the Dockerfile's base image at the pinned Airflow version.
- No secret is in it: credentials are ${VAR} pass-throughs or files the deployment generates.
- The deployment's own steps work for real, with the file's own commands and environment (container paths
  mapped to temporary folders): secrets generation, airflow-init (metadata DB, pools, state store), the
  Dynamics sandbox's certificate for its service name (verified with the service's own curl health
  check), and the demo's connections, which authenticate against the sandboxes through the product's hooks.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
DEPLOY = ROOT / "include" / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
CONTAINER_ROOT = "/opt/airflow"

# The official file's services (airflow-core/docs/howto/docker-compose/docker-compose.yaml) that carry a
# health check there, and ours beyond it.
OFFICIAL_HEALTHCHECKED = ("postgres", "redis", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                          "airflow-worker", "airflow-triggerer", "flower")
COMPONENTS = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker",
              "airflow-triggerer", "flower")
ONE_SHOT = ("airflow-secrets", "airflow-init", "demo-init")
PROFILED = {"flower": "flower", "airflow-cli": "debug", "marketo-sandbox": "demo", "dynamics-sandbox": "demo",
            "demo-init": "demo"}
SECRET_WORDS = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY\b|KEY$|CREDENTIAL", re.IGNORECASE)

# ---------------------------------------------------------------------------------------- reading the file

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution (${VAR}, ${VAR:-default}, ${VAR-default}, $$), on parsed values."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, default = match.group(2), match.group(3) or ""
        if op in (":-", ":?"):
            return env.get(name) or default
        if op in ("-", "?"):
            return env.get(name, default)
        return env.get(name, "")

    return _VAR.sub(one, value)


@cache
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@cache
def resolved() -> dict[str, Any]:
    """The file as compose runs it when none of its variables is set (YAML merges applied by PyYAML)."""
    return interpolate(raw(), {})


def services() -> dict[str, dict[str, Any]]:
    return resolved()["services"]


def environment(service: str) -> dict[str, str]:
    env = services()[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def airflow_services() -> list[str]:
    """Services built on x-airflow-common (they carry its environment)."""
    return [name for name in services() if "AIRFLOW__CORE__EXECUTOR" in environment(name)]


def ours() -> list[str]:
    """Services that run the project's image (Airflow services, the sandboxes, airflow-secrets)."""
    image = raw()["x-airflow-image"]["image"]
    return [name for name, body in raw()["services"].items() if body.get("image") == image]


def mounts(service: str) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of a service's volumes."""
    out = []
    for spec in services()[service].get("volumes", []):
        parts = spec.split(":")
        out.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return out


def is_bind(source: str) -> bool:
    return source.startswith((".", "/"))


def curl_url(test: list[str]) -> str:
    return next(part for part in test if part.startswith(("http://", "https://")))


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


# -------------------------------------------------------- running its pieces here: container paths -> local


@dataclass
class Local:
    """A service's container paths mapped to this machine: read-only binds to the checkout, everything the
    service writes (rw binds, named volumes) to a temporary folder, so nothing lands in the checkout."""

    service: str
    tmp: Path
    volumes: dict[str, Path]

    def table(self) -> list[tuple[str, Path]]:
        pairs = []
        for source, target, read_only in mounts(self.service):
            if is_bind(source) and read_only:
                local = (ROOT / source).resolve()
            elif is_bind(source):
                local = self.tmp / "binds" / Path(source).name
            else:
                local = self.volumes.setdefault(source, self.tmp / "volumes" / source)
            if not str(local).startswith(str(ROOT)):
                local.mkdir(parents=True, exist_ok=True)
            pairs.append((target, local))
        return sorted(pairs, key=lambda pair: -len(pair[0]))

    def path(self, text: str) -> str:
        """Every container path in `text` (a value, a command) as its local path."""
        out = text
        for target, local in self.table():
            out = re.sub(rf"(?<![\w.-]){re.escape(target)}(?=/|\b|$)", str(local), out)
        return out

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: self.path(v) for k, v in environment(self.service).items()}
        env.update({"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.tmp),
                    "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}", "AIRFLOW_HOME": str(self.tmp / "airflow-home")})
        env.update(overrides)
        return env

    def command(self) -> list[str]:
        args = [self.path(a) for a in argv(services()[self.service]["command"])]
        return [sys.executable, *args[1:]] if args[0] == "python" else args


def run(cmd: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ============================================================================ compose accepts the file


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    binary = shutil.which("docker-compose")
    return [binary] if binary else None


def test_docker_compose_config_accepts_the_file_with_every_profile(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed (`make system-packages` installs it)")
    # A clean environment: the file must work with none of its variables set (what the demo promises).
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    base = [*cli, "--project-directory", str(ROOT), "-f", str(COMPOSE)]
    profiles = ["--profile", "demo", "--profile", "flower", "--profile", "debug"]
    quiet = subprocess.run([*base, *profiles, "config", "-q"], env=env, capture_output=True, text=True, check=False)
    assert quiet.returncode == 0, quiet.stderr
    listed = subprocess.run([*base, *profiles, "config", "--services"], env=env, capture_output=True, text=True,
                            check=False)
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == set(services())
    # (docker-compose v1 lists profiled services with `config --services` whether or not their profile is
    # enabled, so which services run without a profile is checked on the file itself, below.)
    # Its resolution of the file agrees with the one the other tests read.
    full = yaml.safe_load(subprocess.run([*base, *profiles, "config"], env=env, capture_output=True, text=True,
                                         check=True).stdout)
    for name, body in full["services"].items():
        assert {k: str(v) for k, v in (body.get("environment") or {}).items()} == environment(name), name
        assert body.get("user") == services()[name].get("user"), name
    assert full["services"]["airflow-worker"]["environment"]["DYNAMICS_SYNC_SCHEDULE"] == "*/5 * * * *"


# ============================================================================ shape


def test_the_official_services_exist_with_their_health_checks() -> None:
    names = set(services())
    assert {*OFFICIAL_HEALTHCHECKED, "airflow-init", "airflow-cli", "airflow-secrets", "marketo-sandbox",
            "dynamics-sandbox", "demo-init"} <= names
    for name in (*OFFICIAL_HEALTHCHECKED, "marketo-sandbox", "dynamics-sandbox"):
        check = services()[name].get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
        assert {"interval", "retries"} <= set(check), name
    for name in ONE_SHOT:
        assert "healthcheck" not in services()[name] and services()[name].get("restart") in (None, "no"), name
    for name in set(names) - set(PROFILED):
        assert not services()[name].get("profiles"), f"{name} must run without a profile"
    for name, profile in PROFILED.items():
        assert services()[name]["profiles"] == [profile], name
    assert environment("airflow-apiserver")["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert argv(services()["airflow-worker"]["command"]) == ["celery", "worker"]


def test_every_airflow_service_shares_the_common_block_and_one_image() -> None:
    common = raw()["x-airflow-common"]
    assert set(airflow_services()) == {*COMPONENTS, "airflow-init", "airflow-cli", "demo-init"}
    assert set(ours()) == {*airflow_services(), "airflow-secrets", "marketo-sandbox", "dynamics-sandbox"}
    image = resolved()["x-airflow-image"]
    for name in ours():
        body = services()[name]
        assert (body["image"], body["build"]) == (image["image"], image["build"]), name
    for name in airflow_services():
        body = services()[name]
        assert {k: v for k, v in environment(name).items() if k in common["environment"]} == interpolate(
            {k: str(v) for k, v in common["environment"].items()}, {}), f"{name} changes the common environment"
        if name not in ("airflow-init",):
            assert body["user"] == "50000:0", name
    assert image["build"] == {"context": ".", "dockerfile": "include/deploy/Dockerfile"}
    assert (ROOT / image["build"]["dockerfile"]).is_file()


def test_start_order_follows_the_official_file() -> None:
    def after(name: str) -> dict[str, str]:
        return {dep: body["condition"] for dep, body in (services()[name].get("depends_on") or {}).items()}

    for name in services():
        for dep in after(name):
            assert dep in services(), f"{name} depends on {dep}, which does not exist"
            if not services()[name].get("profiles"):
                assert not services()[dep].get("profiles"), f"{name} (no profile) needs {dep} of a profile"
    for name in COMPONENTS:
        assert after(name)["airflow-init"] == "service_completed_successfully", name
        assert after(name)["postgres"] == after(name)["redis"] == "service_healthy", name
    assert after("airflow-worker")["airflow-apiserver"] == "service_healthy"
    assert after("postgres") == {"airflow-secrets": "service_completed_successfully"}
    assert after("airflow-init") == {"postgres": "service_healthy", "redis": "service_healthy"}
    assert after("demo-init") == {"postgres": "service_healthy", "redis": "service_healthy",
                                  "airflow-init": "service_completed_successfully",
                                  "marketo-sandbox": "service_healthy", "dynamics-sandbox": "service_healthy"}


def test_mounted_host_paths_exist_and_named_volumes_are_declared() -> None:
    declared = set(resolved().get("volumes") or {})
    used = set()
    for name in services():
        for source, target, read_only in mounts(name):
            if is_bind(source):
                if source != "./logs":  # created by compose, given to AIRFLOW_UID by airflow-init
                    assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the project"
                    assert read_only, f"{name} mounts the checkout's {source} writable"
            else:
                used.add(source)
            assert target.startswith("/"), target
    assert used == declared
    common = {target: source for source, target, _ in mounts("airflow-scheduler")}
    assert {"/opt/airflow/dags": "./dags", "/opt/airflow/plugins": "./plugins", "/opt/airflow/include": "./include",
            "/opt/airflow/config": "./include/deploy/config", "/opt/airflow/logs": "./logs"}.items() <= common.items()
    assert environment("airflow-scheduler")["AIRFLOW_CONFIG"] == "/opt/airflow/config/airflow.cfg"
    assert (ROOT / "include/deploy/config/airflow.cfg").is_file()
    assert "logs/" in (ROOT / ".gitignore").read_text().split()


# ============================================================================ everything it names exists


def test_python_commands_run_project_modules_and_their_ports_agree() -> None:
    for name in ours():
        args = argv(services()[name].get("command", ""))
        if not args or args[0] != "python":
            continue
        assert args[1] == "-m", name
        module = ROOT / args[2].replace(".", "/")
        assert (module / "__main__.py").is_file() or module.with_suffix(".py").is_file(), f"{name}: {args[2]}"
    for name, scheme in (("marketo-sandbox", "http"), ("dynamics-sandbox", "https")):
        body, args = services()[name], argv(services()[name]["command"])
        port = option(args, "--port")
        # Bound to its service name, the host of the URLs it publishes and the one its health check calls.
        assert option(args, "--host") == body["hostname"] == name
        assert curl_url(body["healthcheck"]["test"]) == f"{scheme}://{name}:{port}/_sandbox/limits"
        assert body["ports"] == [f"127.0.0.1:{port}:{port}"]
        state_dir = option(args, "--state-dir")
        assert any(target == state_dir and not is_bind(source) for source, target, _ in mounts(name)), name
    demo = argv(services()["demo-init"]["command"])
    for name, flag in (("marketo-sandbox", "--marketo"), ("dynamics-sandbox", "--dynamics")):
        sandbox = argv(services()[name]["command"])
        assert option(demo, flag).endswith(f"://{name}:{option(sandbox, '--port')}")
    # The CA demo-init reads is the Dynamics sandbox's own (same volume); the copy is where workers look.
    dyn_state = option(argv(services()["dynamics-sandbox"]["command"]), "--state-dir")
    volume_of = {target: source for source, target, _ in mounts("dynamics-sandbox")}[dyn_state]
    assert (volume_of, dyn_state, True) in mounts("demo-init")
    assert option(demo, "--sandbox-ca") == f"{dyn_state}/ca.pem"
    assert "--cacert" in services()["dynamics-sandbox"]["healthcheck"]["test"]
    copy = option(demo, "--ca-copy")
    data = [(s, t) for s, t, ro in mounts("airflow-worker") if copy.startswith(t + "/") and not is_bind(s)]
    assert data and (data[0][0], data[0][1], False) in mounts("demo-init")
    assert not any(source == volume_of for source, _, _ in mounts("airflow-worker"))


def _source_text() -> str:
    files = [*ROOT.glob("plugins/**/*.py"), *ROOT.glob("dags/*.py"), *ROOT.glob("include/**/*.py")]
    return "\n".join(p.read_text() for p in files if "sandbox" not in p.parts)


def test_product_variables_it_sets_are_ones_the_code_reads() -> None:
    text = _source_text()
    names = {k for name in services() for k in environment(name)}
    product = {k for k in names if k.startswith("DYNAMICS_SYNC_")}
    assert {"DYNAMICS_SYNC_STAGING", "DYNAMICS_SYNC_CONFIG", "DYNAMICS_SYNC_DATA_DOCS",
            "DYNAMICS_SYNC_SCHEDULE"} <= product
    for key in product:
        assert f'"{key}"' in text, f"{key} is set but no code reads it"
    conns = {k.removeprefix("AIRFLOW_CONN_").lower() for k in names if k.startswith("AIRFLOW_CONN_")}
    assert conns == {"marketo_default", "dynamics_default", "dynamics_sync_state"}
    for conn_id in conns:
        assert f'"{conn_id}"' in text, f"connection {conn_id} is set but no code uses it"
    # Values the code parses without a fallback for "" are only set with a real value.
    for key in product:
        assert environment("airflow-worker").get(key, "x"), f"{key} is set to an empty string"


def test_every_variable_it_reads_is_documented_at_the_top() -> None:
    header = COMPOSE.read_text().split("\n---", 1)[0]
    used = {m.group(1) for m in _VAR.finditer(COMPOSE.read_text()) if m.group(1)}
    assert used, "no ${VAR} at all?"
    example = (DEPLOY / "env.example").read_text()
    for name in used:
        assert re.search(rf"\b{name}\b", header), f"${{{name}}} is not explained in the file's header"
        assert re.search(rf"\b{name}\b", example), f"${{{name}}} is not in include/deploy/env.example"


def test_the_dockerfile_extends_the_pinned_official_image() -> None:
    text = DOCKERFILE.read_text()
    [base] = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    pinned = re.search(r"^apache-airflow==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE).group(1)
    repo, tag = base.split(":")
    assert repo == "apache/airflow"
    match = re.fullmatch(r"(?:slim-)?(\d+\.\d+\.\d+)-python(\d+\.\d+)", tag)
    assert match, f"base image tag {tag} pins neither the Airflow nor the Python version"
    assert match.group(1) == pinned
    assert match.group(2) == f"{sys.version_info.major}.{sys.version_info.minor}"  # the venv constraints.txt froze
    assert "-r /opt/airflow/deploy/requirements.txt -c /opt/airflow/deploy/constraints.txt" in text
    assert "pip install --no-cache-dir --no-deps -e /opt/airflow" in text
    copied = [src for line in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)$", text, re.MULTILINE)
              for src in line.split()[:-1]]
    assert copied
    for src in copied:
        assert (ROOT / src).exists(), f"the Dockerfile copies {src}, which is not in the project"
    # The build context is the checkout: only what is copied may be sent (no .venv, .local, secrets).
    ignore = [line for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]
    assert ignore[0] == "**"
    assert {line.removeprefix("!").rstrip("/") for line in ignore if line.startswith("!")} == {
        src.rstrip("/") for src in copied}
    for name in ("postgres", "redis"):
        assert re.fullmatch(r"[a-z]+:\d+(\.\d+)*(-\w+)?", services()[name]["image"]), "external images are pinned"


def test_airflow_accepts_its_commands_options_and_secrets(tmp_path: Path) -> None:
    """Airflow itself, in the file's own environment and airflow.cfg, parses every Airflow command and
    health check of the file, knows every AIRFLOW__ option it sets, and reads the generated secrets."""
    local = Local("airflow-scheduler", tmp_path, {})
    env = local.env()
    secrets_dir = Path(local.path("/opt/airflow/secrets"))
    done = run([sys.executable, "-m", "include.deploy.secrets_init", str(secrets_dir), "--uid", str(os.getuid())], env)
    assert done.returncode == 0, done.stderr
    commands, imports = [], []
    for name in airflow_services():
        body = services()[name]
        args = argv(body["command"])
        if args[0] in ("python", "bash"):  # project modules (checked above), the CLI service's shell
            continue
        commands.append(args)
        test = body.get("healthcheck", {}).get("test", [])
        if test and test[0] == "CMD-SHELL":
            shell = shlex.split(test[1].replace("${HOSTNAME}", "host"))
            if shell[0] == "airflow":
                commands.append(shell[1:])
            elif shell[0] == "celery":
                imports.append(option(shell, "--app"))
    options = sorted({k for name in airflow_services() for k in environment(name) if k.startswith("AIRFLOW__")})
    probe = r"""
import json, sys
from airflow.configuration import conf
from airflow.cli import cli_parser
from airflow._shared.module_loading import import_string
spec = json.loads(sys.argv[1])
conf.load_providers_configuration()
desc = conf.configuration_description
out = {"bad_commands": [], "unknown_options": [], "not_sensitive": []}
parser = cli_parser.get_parser()
for args in spec["commands"]:
    try:
        parser.parse_args(args)
    except SystemExit:
        out["bad_commands"].append(args)
for name in spec["options"]:
    section, key = name.removeprefix("AIRFLOW__").lower().split("__", 1)
    base = key.removesuffix("_cmd")
    if base not in desc.get(section, {}).get("options", {}):
        out["unknown_options"].append(name)
    elif key.endswith("_cmd") and (section, base) not in conf.sensitive_config_values:
        out["not_sensitive"].append(name)
out["apps"] = [type(import_string(path)).__name__ for path in spec["imports"]]
out["values"] = {k: conf.get(*k.split(".")) for k in spec["read"]}
print(json.dumps(out))
"""
    read = ["core.fernet_key", "api_auth.jwt_secret", "api.secret_key", "core.executor", "celery.worker_concurrency",
            "core.dags_are_paused_at_creation", "scheduler.enable_health_check",
            "core.simple_auth_manager_passwords_file"]
    spec = {"commands": commands, "options": options, "imports": imports, "read": read}
    done = run([sys.executable, "-c", probe, json.dumps(spec)], env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["bad_commands"] == [] and out["unknown_options"] == [] and out["not_sensitive"] == []
    assert out["apps"] == ["Celery"] * len(imports) and imports
    assert {"api-server", "scheduler", "dag-processor", "triggerer"} <= {c[0] for c in commands}
    values = out["values"]
    for key, file in (("core.fernet_key", "fernet_key"), ("api_auth.jwt_secret", "jwt_secret"),
                      ("api.secret_key", "api_secret_key")):
        assert values[key] == (secrets_dir / file).read_text(), f"{key} is not the generated secret"
    assert values["core.executor"] == "CeleryExecutor"
    assert values["celery.worker_concurrency"] == "4"  # from include/deploy/config/airflow.cfg
    assert values["scheduler.enable_health_check"] == "True"  # the scheduler's health check needs it
    assert Path(values["core.simple_auth_manager_passwords_file"]).parent == secrets_dir


# ============================================================================ no secret in it


def test_no_secret_is_written_in_the_file() -> None:
    text = COMPOSE.read_text()
    assert not re.search(r"://[^\s/@:'\"]+:[^\s/@'\"]+@", text), "a URL with user:password"
    for name, body in raw()["services"].items():
        for key, value in (body.get("environment") or {}).items():
            value = str(value)
            if key.startswith("AIRFLOW_CONN_") and key != "AIRFLOW_CONN_DYNAMICS_SYNC_STATE":
                assert value == f"${{{key}:-}}", f"{name}: {key} must be a pass-through of your own variable"
            elif SECRET_WORDS.search(key):
                # A secret is a pass-through (no default), a file or a command reading a generated file.
                assert (re.fullmatch(rf"\$\{{{key}(:-)?\}}", value) or key.endswith(("_FILE", "_CMD"))
                        or value.startswith("/run/secrets/") or value.startswith("/opt/airflow/secrets/")
                        ), f"{name}: {key}={value}"
            for word in ("password", "secret"):
                assert f'"{word}"' not in value.lower(), f"{name}: {key} carries a {word}"
    state = json.loads(environment("airflow-worker")["AIRFLOW_CONN_DYNAMICS_SYNC_STATE"])
    assert "password" not in state
    for name in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
        assert re.search(r"://airflow@postgres/", environment("airflow-worker")[name]), name
    assert environment("airflow-worker")["PGPASSFILE"].startswith("/opt/airflow/secrets/")
    assert environment("postgres")["POSTGRES_PASSWORD_FILE"].startswith("/run/secrets/")
    assert "POSTGRES_PASSWORD" not in environment("postgres")
    for path in (*DEPLOY.rglob("*"),):
        if path.is_file() and path.suffix in ("", ".cfg", ".sql", ".example", ".yaml"):
            assert not re.search(r"(password|secret)\s*[=:]\s*\S{6,}", path.read_text(), re.IGNORECASE), path


def test_the_state_store_is_its_own_database_on_the_same_server() -> None:
    from airflow.models.connection import Connection

    from dynamics_sync.state import sqlalchemy_url

    value = environment("airflow-worker")["AIRFLOW_CONN_DYNAMICS_SYNC_STATE"]
    conn = Connection.from_json(value, conn_id="dynamics_sync_state")
    url = sqlalchemy_url(conn)
    assert url == "postgresql+psycopg2://airflow@postgres:5432/dynamics_sync"  # no password: from PGPASSFILE
    init_dir = {t: s for s, t, _ in mounts("postgres")}["/docker-entrypoint-initdb.d"]
    sql = "\n".join(p.read_text() for p in sorted((ROOT / init_dir).glob("*.sql")))
    assert re.search(r"^CREATE DATABASE dynamics_sync;", sql, re.MULTILINE)
    meta = environment("airflow-worker")["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert meta.endswith(f"@postgres/{environment('postgres')['POSTGRES_DB']}") and conn.schema != "airflow"
    assert conn.login == environment("postgres")["POSTGRES_USER"]


def test_init_prepares_every_folder_the_services_write() -> None:
    dirs = set(re.findall(r"--dir (\S+)", services()["airflow-init"]["command"]))
    worker = environment("airflow-worker")
    demo = argv(services()["demo-init"]["command"])
    wanted = {"/opt/airflow/logs", worker["TMPDIR"], worker["DYNAMICS_SYNC_DATA_DOCS"],
              worker["DYNAMICS_SYNC_STAGING"].removeprefix("file://"), str(Path(option(demo, "--ca-copy")).parent)}
    assert wanted <= dirs
    assert services()["airflow-init"]["user"] == "0:0"  # to chown; include/deploy/init.py drops to AIRFLOW_UID


# ============================================================================ its steps, run for real


def test_secrets_are_generated_once_and_only_named(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    local = Local("airflow-secrets", tmp_path, {})
    env = local.env(AIRFLOW_UID=str(os.getuid()))
    first = run(local.command(), env)
    assert first.returncode == 0, first.stderr
    directory = Path(local.path("/opt/airflow/secrets"))
    files = {p.name: p.read_text() for p in directory.iterdir()}
    assert set(files) == {"postgres_password", "pgpass", "fernet_key", "jwt_secret", "api_secret_key",
                          "simple_auth_manager_passwords.json"}
    Fernet(files["fernet_key"].encode())  # a valid key, or this raises
    assert files["pgpass"] == f"postgres:5432:*:airflow:{files['postgres_password']}\n"
    assert list(json.loads(files["simple_auth_manager_passwords.json"])) == ["admin"]
    for name in files:
        mode = (directory / name).stat().st_mode & 0o777
        assert mode == (0o644 if name == "postgres_password" else 0o600), f"{name}: {oct(mode)}"
    second = run(local.command(), env)
    assert second.returncode == 0 and "all present" in second.stdout
    assert {p.name: p.read_text() for p in directory.iterdir()} == files  # the database keeps its password
    for value in (*files.values(), *json.loads(files["simple_auth_manager_passwords.json"]).values()):
        assert value.strip() not in first.stdout + first.stderr + second.stdout + second.stderr


@pytest.mark.postgres
def test_libpq_takes_the_password_from_the_generated_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The PostgreSQL URLs carry no password; libpq (psycopg2) must find it in PGPASSFILE."""
    psycopg2 = pytest.importorskip("psycopg2")
    with socket.socket() as sock:
        sock.settimeout(2)
        if sock.connect_ex(("127.0.0.1", 5432)) != 0:
            pytest.skip("needs PostgreSQL at 127.0.0.1:5432")
    from include.deploy.secrets_init import ensure_secrets

    ensure_secrets(tmp_path, uid=os.getuid(), pg_host="127.0.0.1", pg_user="postgres")
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "pgpass"))
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    try:
        assert conn.info.password == (tmp_path / "postgres_password").read_text()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Local, subprocess.CompletedProcess[str]]]:
    """airflow-secrets, then airflow-init, with their own commands and environment, on a fresh metadata DB.

    Two stand-ins, because this machine has no Docker: SQLite for the metadata DB and the state store (the
    CeleryExecutor refuses SQLite, so the executor is LocalExecutor here), and AIRFLOW_UID = this user.
    """
    tmp = tmp_path_factory.mktemp("deployment")
    volumes: dict[str, Path] = {}
    uid = str(os.getuid())
    secrets = Local("airflow-secrets", tmp, volumes)
    assert run(secrets.command(), secrets.env(AIRFLOW_UID=uid)).returncode == 0
    init = Local("airflow-init", tmp, volumes)
    env = init.env(AIRFLOW_UID=uid, AIRFLOW__CORE__EXECUTOR="LocalExecutor",
                   AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{tmp / 'airflow.db'}",
                   AIRFLOW_CONN_DYNAMICS_SYNC_STATE=json.dumps({"conn_type": "sqlite", "host": str(tmp / "state.db")}))
    done = run(init.command(), env, timeout=300)
    yield init, done


def test_airflow_init_migrates_and_creates_the_pools_and_folders(deployment: tuple[Local, Any]) -> None:
    from include.runtime.environment import POOLS

    init, done = deployment
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    with sqlite3.connect(init.tmp / "airflow.db") as db:
        pools = {row[0]: (row[1], row[2]) for row in db.execute("SELECT pool, slots, description FROM slot_pool")}
    for name, spec in POOLS.items():
        assert pools[name] == spec, name
    with sqlite3.connect(init.tmp / "state.db") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"activity_log", "record_links", "watermarks", "dynamics_sync_alembic_version"} <= tables
        assert db.execute("SELECT version_num FROM dynamics_sync_alembic_version").fetchone()
    for path in re.findall(r"--dir (\S+)", services()["airflow-init"]["command"]):
        local = Path(init.path(path))
        assert local.is_dir() and local.stat().st_mode & 0o777 == 0o775, path
        assert not str(local).startswith(str(ROOT)), "a writable folder landed in the checkout"


@pytest.fixture(scope="module")
def demo_sandboxes(deployment: tuple[Local, Any]) -> Iterator[dict[str, Any]]:
    """Both sandboxes started with the demo profile's own commands (the Dynamics one through the wrapper
    that certifies its service name), on loopback ports of this test instead of their service names."""
    init, _ = deployment
    procs, ports = {}, {}
    try:
        for name in ("marketo-sandbox", "dynamics-sandbox"):
            local = Local(name, init.tmp, init.volumes)
            args = local.command()
            port = ports[name] = free_port()
            args[args.index("--host") + 1] = "127.0.0.1"
            args[args.index("--port") + 1] = str(port)
            if name == "dynamics-sandbox":
                args += ["--tls-name", "127.0.0.1", "--tls-name", name]
            log = open(init.tmp / f"{name}.log", "wb")  # noqa: SIM115 (lives as long as the child)
            procs[name] = subprocess.Popen(args, env=local.env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        world = {"ports": ports, "procs": procs, "tmp": init.tmp, "volumes": init.volumes}
        _wait_answering(world)
        yield world
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _wait_answering(world: dict[str, Any], timeout: float = 60) -> None:
    import requests

    ca = Local("dynamics-sandbox", world["tmp"], world["volumes"]).path("/opt/airflow/sandbox/dynamics/ca.pem")
    deadline = time.monotonic() + timeout
    for name, url in (("marketo-sandbox", "http://127.0.0.1:{}"), ("dynamics-sandbox", "https://127.0.0.1:{}")):
        while True:
            assert world["procs"][name].poll() is None, (world["tmp"] / f"{name}.log").read_text()[-2000:]
            try:
                requests.get(url.format(world["ports"][name]) + "/_sandbox/limits", timeout=5,
                             verify=ca if name == "dynamics-sandbox" else True).raise_for_status()
                break
            except (requests.RequestException, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)


def _wait_healthy(name: str, world: dict[str, Any], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The service's own health check (curl), with its service name resolved to the loopback port."""
    local = Local(name, world["tmp"], world["volumes"])
    test = [local.path(part) for part in services()[name]["healthcheck"]["test"][1:]]
    port = world["ports"][name]
    internal = option(argv(services()[name]["command"]), "--port")
    # --connect-to sends the request to the test's port but keeps the service name for TLS verification.
    cmd = [test[0], "--connect-to", f"{name}:{internal}:127.0.0.1:{port}", *test[1:]]
    deadline = time.monotonic() + timeout
    while True:
        done = run(cmd, local.env(), timeout=30)
        if done.returncode == 0 or time.monotonic() > deadline:
            return done
        assert world["procs"][name].poll() is None, (world["tmp"] / f"{name}.log").read_text()[-2000:]
        time.sleep(0.5)


def test_the_sandboxes_pass_their_health_checks_under_their_service_names(demo_sandboxes: dict[str, Any]) -> None:
    if not shutil.which("curl"):
        pytest.skip("the health checks use curl, which is not installed here")
    for name in ("marketo-sandbox", "dynamics-sandbox"):
        done = _wait_healthy(name, demo_sandboxes)
        assert done.returncode == 0, f"{name}: {done.stderr}"
    # The certificate names the service and nothing else beyond loopback: another name is refused.
    local = Local("dynamics-sandbox", demo_sandboxes["tmp"], demo_sandboxes["volumes"])
    port = demo_sandboxes["ports"]["dynamics-sandbox"]
    ca = local.path("/opt/airflow/sandbox/dynamics/ca.pem")
    wrong = run(["curl", "--fail", "--silent", "--cacert", ca, "--resolve", f"elsewhere:{port}:127.0.0.1",
                 f"https://elsewhere:{port}/_sandbox/limits"], local.env())
    assert wrong.returncode != 0


def _demo_init(world: dict[str, Any], deployment_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    local = Local("demo-init", world["tmp"], world["volumes"])
    args = local.command()
    args[args.index("--marketo") + 1] = f"http://127.0.0.1:{world['ports']['marketo-sandbox']}"
    args[args.index("--dynamics") + 1] = f"https://127.0.0.1:{world['ports']['dynamics-sandbox']}"
    return run(args, {**local.env(), **deployment_env}, timeout=300)


def test_demo_init_stores_working_connections_and_seeds_once(deployment: tuple[Local, Any],
                                                             demo_sandboxes: dict[str, Any]) -> None:
    import requests

    init, _ = deployment
    world = demo_sandboxes
    # The metadata DB and state store of this deployment (see the deployment fixture); the rest is the
    # file's own environment, connection variables empty as compose passes them when you set none.
    env = {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{init.tmp / 'airflow.db'}",
           "AIRFLOW_CONN_DYNAMICS_SYNC_STATE": json.dumps({"conn_type": "sqlite", "host": str(init.tmp / "state.db")})}
    first = _demo_init(world, env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert "seeded Dynamics" in first.stdout
    local = Local("demo-init", world["tmp"], world["volumes"])
    ca = local.path("/opt/airflow/sandbox/dynamics/ca.pem")
    dyn_url = f"https://127.0.0.1:{world['ports']['dynamics-sandbox']}"
    mkt_url = f"http://127.0.0.1:{world['ports']['marketo-sandbox']}"
    secrets = [v for info in (requests.get(f"{mkt_url}/_sandbox/info", timeout=10).json(),
                              requests.get(f"{dyn_url}/_sandbox/info", timeout=10, verify=ca).json())
               for k, v in info.items() if "secret" in k]
    assert secrets and not any(s in first.stdout + first.stderr for s in secrets), "a credential was printed"
    counts = requests.get(f"{dyn_url}/_sandbox/stats", timeout=10, verify=ca).json()
    assert (counts["leads"], counts["contacts"]) == (300, 230)

    # What a task gets: the api-server resolves the connection (environment first, then the metadata DB) and
    # the product's hooks authenticate with it, the Dynamics one trusting the CA copy on the data volume.
    check = r"""
import json, os
from airflow.models.connection import Connection
out = {}
for conn_id in ("marketo_default", "dynamics_default"):
    conn = Connection.get_connection_from_secrets(conn_id)
    os.environ["AIRFLOW_CONN_" + conn_id.upper()] = conn.as_json()
    out[conn_id] = {"type": conn.conn_type, "ca_file": conn.extra_dejson.get("ca_file")}
from dynamics_sync.hooks.dynamics import DynamicsHook
from dynamics_sync.hooks.marketo import MarketoHook
out["marketo_default"]["test"] = MarketoHook().test_connection()
out["dynamics_default"]["test"] = DynamicsHook().test_connection()
print(json.dumps(out))
"""
    done = run([sys.executable, "-c", check], {**local.env(), **env})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["marketo_default"]["type"] == "marketo" and out["marketo_default"]["test"][0], out
    assert out["dynamics_default"]["type"] == "dynamics" and out["dynamics_default"]["test"][0], out
    ca_copy = option(argv(services()["demo-init"]["command"]), "--ca-copy")
    assert out["dynamics_default"]["ca_file"] == local.path(ca_copy)  # on the volume every worker mounts
    assert Path(local.path(ca_copy)).read_bytes() == Path(ca).read_bytes()

    again = _demo_init(world, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "not seeding" in again.stdout and "stored in the metadata DB" in again.stdout
    assert requests.get(f"{dyn_url}/_sandbox/stats", timeout=10, verify=ca).json()["leads"] == 300
