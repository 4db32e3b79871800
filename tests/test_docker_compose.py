"""The Docker deployment, checked without a Docker engine (tests/test_compose_stack.py checks the
stack itself on a real engine, in CI's third configuration: scripts/compose_ci.sh).

(a) `docker-compose.yml` is validated by Debian's `docker-compose config` and its structure is
    asserted: one image, the pinned official one unless COURSE_DOCKER_REDIS_IMAGE names another,
    every server's needs on its command line (no entrypoint's side effects), health checks, ports
    published on 127.0.0.1 only, cluster nodes sharing one network namespace and announcing
    127.0.0.1; the override that breaks the announced address on purpose, and the CI script's
    answer when no engine can run.
(b) The scripts the containers run (`docker/cluster-init.sh`, `docker/cluster-healthcheck.sh`) are
    run directly, with /bin/sh (dash on Debian: no bash), against six local cluster-enabled servers
    started with the very settings the compose file gives its nodes.
(c) Where user and network namespaces are allowed (`unshare -rn`), the compose file's own command
    lines (nodes on 7001-7006, the init service, every health check) run in one fresh network
    namespace, as the containers share one: the closest thing to `docker compose up --wait`.

Local nodes get bus ports chosen by `start_server` (not port + 10000): `redis-cli --cluster create`
(7.0 and later) reads each node's bus port from CLUSTER NODES, so it copes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from redis.cluster import RedisCluster

from course_lib.concurrency import wait_for
from course_lib.servers import find_binary, free_port, scratch_server, start_server

# The compose file's own Redis 7 and its scripts are what is checked here, not the course's engine.
pytestmark = pytest.mark.engine_agnostic

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
SCRIPTS = REPO / "docker"
INIT = SCRIPTS / "cluster-init.sh"
HEALTHCHECK = SCRIPTS / "cluster-healthcheck.sh"
MOUNT = "/course-docker"  # where the compose file mounts docker/ in the containers
OWNER = "redis-cluster"  # the service that owns the cluster's network namespace and creates the cluster
NODES = [f"redis-node-{n}" for n in range(1, 7)]
CLUSTER_PORTS = list(range(7001, 7007))
BROKEN_ANNOUNCE = SCRIPTS / "broken-announce.yml"
COMPOSE_CI = REPO / "scripts" / "compose_ci.sh"
PINNED_REDIS_7 = re.compile(r"^redis:7\.\d+\.\d+(-alpine[\d.]*)?$")  # official image, full 7.x version
IMAGE_SETTING = re.compile(r"^\$\{COURSE_DOCKER_REDIS_IMAGE:-(.+)\}$")  # the image, with its default


# --- (a) the compose file ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    """docker-compose.yml as PyYAML reads it (merge keys `<<:` resolved, `${...}` not interpolated)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _require(tool: str, why: str) -> str:
    """The tool's path; a skip saying how to get it, or a failure under CI (.ci/run installs it)."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed, so {why}"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; .ci/run should have installed it")
        pytest.skip(message)
    return path


def _docker_compose(*args: str, files=(COMPOSE_FILE,), **settings: str) -> subprocess.CompletedProcess:
    exe = _require("docker-compose", "the compose file cannot be validated here "
                   "(Debian/Ubuntu: apt-get install docker-compose)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "COURSE_DOCKER_", "DOCKER_"))}
    options = [option for path in files for option in ("-f", str(path))]
    return subprocess.run([exe, "--project-directory", str(REPO), *options, *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env={**env, **settings})


def _settings(command: list[str]) -> dict[str, str]:
    """`redis-server --name value ...` as {name: value}."""
    assert command[0] == "redis-server" and len(command) % 2 == 1, command
    names, values = command[1::2], command[2::2]
    assert all(name.startswith("--") for name in names), command
    return {name[2:]: value for name, value in zip(names, values)}


def test_docker_compose_config_accepts_the_file_without_warnings():
    quiet = _docker_compose("config", "-q")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.strip() == "", f"docker-compose config warned:\n{quiet.stderr}"

    resolved = yaml.safe_load(_docker_compose("config").stdout)
    assert set(resolved["services"]) == {"redis", OWNER, *NODES}
    published = {name: sorted(_published(port) for port in service.get("ports", []))
                 for name, service in resolved["services"].items()}
    assert published == {
        "redis": [("127.0.0.1", 6379, 6379)],
        OWNER: [("127.0.0.1", p, p) for p in CLUSTER_PORTS],
        **{name: [] for name in NODES},
    }


def _published(port) -> tuple[str, int, int]:
    """(host address, host port, container port) from Compose v1's short form or v2's long form."""
    if isinstance(port, dict):
        return port["host_ip"], int(port["published"]), int(port["target"])
    host, published, target = port.split("/")[0].split(":")
    return host, int(published), int(target)


def test_no_obsolete_version_key(compose):
    assert "version" not in compose  # Compose v2 warns that it is obsolete


def test_one_image_by_default_the_pinned_official_redis_7(compose):
    images = {name: service["image"] for name, service in compose["services"].items()}
    assert len(set(images.values())) == 1, images  # one image to pull, one engine version everywhere
    default = IMAGE_SETTING.match(images["redis"])
    assert default and PINNED_REDIS_7.match(default.group(1)), images

    resolved = yaml.safe_load(_docker_compose("config").stdout)["services"]
    assert {service["image"] for service in resolved.values()} == {default.group(1)}
    # CI, which reaches no registry, runs the image docker/build-local-image.sh builds.
    local = yaml.safe_load(_docker_compose("config", COURSE_DOCKER_REDIS_IMAGE="course-redis:local").stdout)["services"]
    assert {service["image"] for service in local.values()} == {"course-redis:local"}


def test_every_server_says_on_its_command_line_what_it_needs(compose):
    """No image's entrypoint is relied on (the official one switches protected mode off by itself;
    a plain image does not, and the host's clients would be refused): every redis-server listens on
    its container's addresses with protected mode off, which only this machine can reach."""
    services = compose["services"]
    servers = {"redis": services["redis"], **{name: services[name] for name in NODES}}
    for name, service in servers.items():
        assert "entrypoint" not in service, name
        options = _settings(service["command"])
        assert (options["bind"], options["protected-mode"]) == ("0.0.0.0", "no"), name
        assert options["enable-debug-command"] == "yes", name
    assert all("entrypoint" not in service for service in services.values())


def test_every_service_has_a_health_check(compose):
    for name, service in compose["services"].items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), name


def test_cluster_health_checks_wait_for_the_cluster(compose):
    services = compose["services"]
    owner_check = services[OWNER]["healthcheck"]["test"]
    assert owner_check == ["CMD", "sh", f"{MOUNT}/{HEALTHCHECK.name}"]  # every node, all agreeing
    for name, port in zip(NODES, CLUSTER_PORTS):
        assert services[name]["healthcheck"]["test"] == ["CMD", "sh", f"{MOUNT}/{HEALTHCHECK.name}", str(port)]
    for name in (OWNER, *NODES):
        assert services[name]["environment"]["CLUSTER_PORTS"].split() == [str(p) for p in CLUSTER_PORTS]
        assert services[name]["environment"]["CLUSTER_REPLICAS"] == "1"


def test_ports_are_published_on_loopback_only(compose):
    services = compose["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), (name, port)
    assert services["redis"]["ports"] == ["127.0.0.1:${COURSE_DOCKER_REDIS_PORT:-6379}:6379"]
    # The namespace owner publishes every node's port, unchanged: what the nodes announce works on the host.
    assert services[OWNER]["ports"] == [f"127.0.0.1:{p}:{p}" for p in CLUSTER_PORTS]


def test_nodes_share_one_namespace_and_announce_loopback(compose):
    services = compose["services"]
    settings = []
    for name, port in zip(NODES, CLUSTER_PORTS):
        node = services[name]
        assert node["network_mode"] == f"service:{OWNER}", name
        assert "ports" not in node and "networks" not in node, name
        # Started, never "healthy": the owner turns healthy only once these nodes form the cluster.
        assert node["depends_on"] == {OWNER: {"condition": "service_started"}}, name
        options = _settings(node["command"])
        assert options.pop("port") == str(port)
        assert options.pop("cluster-port") == str(port + 10000)
        settings.append(options)
    assert all(options == settings[0] for options in settings), "nodes differ in more than their ports"
    options = settings[0]
    assert options["cluster-enabled"] == "yes"
    assert options["cluster-announce-ip"] == "127.0.0.1"
    assert options["save"] == "" and options["appendonly"] == "no"


def test_cluster_is_created_by_a_service_that_never_exits(compose):
    """`up --wait` fails on an exited container in some Compose versions: the init service stays up."""
    owner = compose["services"][OWNER]
    assert owner["command"] == ["sh", f"{MOUNT}/{INIT.name}", "--stay"]
    assert "network_mode" not in owner and "depends_on" not in owner
    assert owner.get("restart", "no") == "no"  # a failed creation shows as an exited container, not a loop


def test_scripts_are_mounted_and_posix(compose):
    for name in (OWNER, *NODES):
        assert compose["services"][name]["volumes"] == [f"./docker:{MOUNT}:ro"], name
    for script in (INIT, HEALTHCHECK):
        text = script.read_text()
        assert text.startswith("#!/bin/sh\n"), script
        assert "\r" not in text, f"{script} has CRLF line ends"
        check = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_broken_announce_override_changes_only_what_the_nodes_announce(compose):
    """docker/broken-announce.yml (scripts/compose_ci.sh brings it up to see the health checks refuse
    it) keeps every node's command and appends --cluster-announce-ip with the container's address."""
    override = yaml.safe_load(BROKEN_ANNOUNCE.read_text())["services"]
    assert set(override) == {OWNER, *NODES}
    assert override[OWNER] == {"environment": {"CLUSTER_INIT_TIMEOUT": "20"}}
    entrypoint = ["sh", "-c", 'exec "$$@" --cluster-announce-ip "$$(hostname -i)"', "announce"]
    assert all(override[name] == {"entrypoint": entrypoint} for name in NODES)
    merged = _docker_compose("config", files=(COMPOSE_FILE, BROKEN_ANNOUNCE))
    assert merged.returncode == 0 and merged.stderr.strip() == "", merged.stderr
    services = yaml.safe_load(merged.stdout)["services"]
    for name in NODES:
        assert services[name]["command"] == compose["services"][name]["command"], name
    # What the entrypoint runs (with Compose's $$ unescaped): the command, plus the container's address.
    shell = [part.replace("$$", "$") for part in entrypoint]
    ran = subprocess.run([*shell, "echo", "redis-server", "--port", "7001"], capture_output=True, text=True)
    address = subprocess.run(["hostname", "-i"], capture_output=True, text=True).stdout.strip()
    assert ran.stdout.split() == ["redis-server", "--port", "7001", "--cluster-announce-ip", *address.split()]


def test_compose_ci_without_an_engine_fails_under_ci_and_skips_elsewhere(tmp_path):
    """scripts/compose_ci.sh needs a Docker engine: under CI its absence fails the run, with the
    reason; on a learner's machine it is a skip, with the reason. (An engine that does not answer at
    DOCKER_HOST is never started by the script, so this runs in a second, anywhere.)"""
    base = {k: v for k, v in os.environ.items() if k not in ("CI", "COURSE_DOCKER_REDIS_IMAGE")}
    base["DOCKER_HOST"] = f"unix://{tmp_path}/no-engine.sock"
    under_ci = subprocess.run(["bash", str(COMPOSE_CI)], capture_output=True, text=True, timeout=60,
                              env={**base, "CI": "true"})
    assert under_ci.returncode == 1, under_ci.stdout + under_ci.stderr
    assert "compose-ci: FAILED:" in under_ci.stderr and "a Docker engine is required under CI" in under_ci.stderr
    assert "does not answer" in under_ci.stderr or "no docker command" in under_ci.stderr
    elsewhere = subprocess.run(["bash", str(COMPOSE_CI)], capture_output=True, text=True, timeout=60, env=base)
    assert elsewhere.returncode == 0, elsewhere.stdout + elsewhere.stderr
    assert "compose-ci: skipped:" in elsewhere.stdout and "(under CI this fails)" in elsewhere.stdout


def test_ci_runs_the_compose_configuration():
    run = (REPO / ".ci" / "run").read_text()
    assert "bash scripts/compose_ci.sh" in run
    for shell, script in (("bash", COMPOSE_CI), ("sh", SCRIPTS / "build-local-image.sh")):
        check = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_environment_yml_installs_the_project_from_pyproject():
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    assert environment["channels"][0] == "conda-forge"
    dependencies = environment["dependencies"]
    assert "python=3.11" in dependencies and "pip" in dependencies
    assert any(str(dep).split(">")[0].split("=")[0] == "redis-server" for dep in dependencies)
    # Python dependencies: pyproject.toml only, at the versions `make` installs
    assert {"pip": ["-c constraints.txt", "-e .[test]"]} in dependencies


def test_github_workflow_runs_ci_run():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    steps = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert "bash .ci/run" in steps  # CI's logic lives in .ci/run alone


# --- (b) the scripts, run against local servers --------------------------------------------------

@pytest.fixture(scope="module")
def redis_cli() -> str:
    return _require("redis-cli", "the cluster scripts cannot run here "
                    "(Debian/Ubuntu: apt-get install redis-tools, which redis-server pulls in)")


@pytest.fixture
def local_nodes(compose, tmp_path):
    """Six fresh cluster-enabled servers on free loopback ports, with the compose file's node settings."""
    options = _settings(compose["services"][NODES[0]]["command"])
    for name in ("port", "cluster-port", "bind"):  # start_server picks free ports and binds 127.0.0.1
        options.pop(name)
    binary = find_binary()
    nodes = []
    try:
        for _ in CLUSTER_PORTS:
            nodes.append(start_server(binary, tmp_path, cluster=True, config=options))
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def _environment(redis_cli: str, ports, **settings: str) -> dict[str, str]:
    """What the compose file sets in the containers, pointed at the local nodes."""
    environment = {**os.environ, "CLUSTER_HOST": "127.0.0.1", "CLUSTER_PORTS": " ".join(map(str, ports)),
                   "CLUSTER_REPLICAS": "1", "REDIS_CLI": redis_cli, **settings}
    environment.pop("REDISCLI_AUTH", None)
    return environment


def _run(redis_cli: str, script: Path, *args: str, ports=(), **settings: str) -> subprocess.CompletedProcess:
    """Run a script as a container would: with /bin/sh, its inputs in the environment and arguments."""
    return subprocess.run(["sh", str(script), *args], capture_output=True, text=True, timeout=120,
                          env=_environment(redis_cli, ports, **settings))


def _replication(node) -> dict:
    with node.client() as client:
        return client.info("replication")


def test_healthcheck_fails_before_init_and_passes_after(redis_cli, local_nodes):
    ports = [node.port for node in local_nodes]

    before = _run(redis_cli, HEALTHCHECK, ports=ports)
    assert before.returncode == 1
    assert f"127.0.0.1:{ports[0]}: cluster_state is fail" in before.stdout
    for port in ports:  # the per-node check of each container fails too
        assert _run(redis_cli, HEALTHCHECK, str(port), ports=ports).returncode == 1

    init = _run(redis_cli, INIT, ports=ports, CLUSTER_INIT_TIMEOUT="60")
    assert init.returncode == 0, init.stdout + init.stderr
    assert "creating the cluster" in init.stdout

    # cluster-init.sh returns only once the health check passes: no waiting needed here.
    after = _run(redis_cli, HEALTHCHECK, ports=ports)
    assert after.returncode == 0, after.stdout
    assert "cluster ok: 6 nodes, 3 primaries" in after.stdout
    for port in ports:
        assert _run(redis_cli, HEALTHCHECK, str(port), ports=ports).returncode == 0

    roles = []
    for node in local_nodes:
        replication = _replication(node)
        roles.append(replication["role"])
        if replication["role"] == "slave":
            assert replication["master_link_status"] == "up"
        with node.client() as client:
            slots = client.execute_command("CLUSTER SLOTS")
        # Every node tells clients 127.0.0.1 (cluster-announce-ip), never another address.
        assert {address[0] for entry in slots for address in entry[2:]} == {"127.0.0.1"}
        assert sum(entry[1] - entry[0] + 1 for entry in slots) == 16384
        assert sorted(len(entry[2:]) for entry in slots) == [2, 2, 2]  # each range: a primary and a replica
    assert sorted(roles) == ["master"] * 3 + ["slave"] * 3

    cluster = RedisCluster(host="127.0.0.1", port=ports[0], decode_responses=True)
    try:
        keys = [f"course:docker:{n}" for n in range(20)]  # spread over all three primaries
        for key in keys:
            cluster.set(key, key)
        assert [cluster.get(key) for key in keys] == keys
        assert len({cluster.keyslot(key) for key in keys}) == len(keys)
    finally:
        cluster.close()

    # Again, as the compose service runs it (`--stay`): idempotent, since a container may be started
    # again; then up and idle until `docker compose stop` sends SIGTERM, which ends it at once.
    lines = _stay_until_terminated(redis_cli, ports)
    assert any("nothing to create" in line for line in lines), lines

    # A node announcing another address than the one it is reached at fails the check at once: a
    # client that found one node could not follow it to this one (docker/broken-announce.yml).
    with local_nodes[1].client() as client:
        client.config_set("cluster-announce-ip", "127.0.0.2")
    moved = _run(redis_cli, HEALTHCHECK, str(ports[1]), ports=ports)
    assert moved.returncode == 1
    assert (f"sends clients to 127.0.0.2:{ports[1]} (CLUSTER SHARDS endpoint), not to 127.0.0.1 where the "
            "nodes are reached: check cluster-announce-ip") in moved.stdout


def _stay_until_terminated(redis_cli: str, ports, **settings: str) -> list[str]:
    """Run `cluster-init.sh --stay` until it reports the cluster ready, SIGTERM it, return its output."""
    process = subprocess.Popen(["sh", str(INIT), "--stay"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=_environment(redis_cli, ports, **settings), start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("staying up" in line for line in lines) or process.poll() is not None, 60,
                 "cluster-init.sh --stay to report the cluster ready")
        assert process.poll() is None, "".join(lines)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        reader.join(timeout=10)
        # Its idle `sleep` went with it: nothing is left in the script's process group.
        wait_for(lambda: not _group_alive(process.pid), 10, "the idle sleep to exit")
        return lines
    finally:
        if _group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)



def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False


def test_scripts_explain_unreachable_and_non_cluster_nodes(redis_cli):
    nobody = free_port()
    down = _run(redis_cli, HEALTHCHECK, ports=[nobody])
    assert down.returncode == 1 and f"127.0.0.1:{nobody}: no answer" in down.stdout

    gave_up = _run(redis_cli, INIT, ports=[nobody], CLUSTER_INIT_TIMEOUT="1")
    assert gave_up.returncode == 1
    assert "gave up after 1s waiting for every node to answer PING" in gave_up.stderr

    with scratch_server() as standalone:
        check = _run(redis_cli, HEALTHCHECK, ports=[standalone.port])
        assert check.returncode == 1 and "not a cluster node" in check.stdout
        init = _run(redis_cli, INIT, ports=[standalone.port])
        assert init.returncode == 1 and "is not a cluster node" in init.stderr
        with standalone.client() as client:
            assert client.dbsize() == 0  # nothing was done to it

    usage = _run(redis_cli, INIT, "--bogus", ports=[nobody])
    assert usage.returncode == 2 and "unknown option --bogus" in usage.stderr


# --- (c) the compose cluster's own commands, in a network namespace of its own ---------------------

# Run inside `unshare -rn` (a fresh network namespace, like the one the compose nodes share): bring
# loopback up, start the six nodes with the compose file's exact command lines (ports 7001-7006,
# bind 0.0.0.0), run the init service's command, and report what its health checks and a cluster
# client see. Every process it starts is its child and is stopped before it exits.
NAMESPACE_PROGRAM = r'''
import fcntl, json, signal, socket, struct, subprocess, sys, time
from redis.cluster import RedisCluster


spec = json.loads(sys.argv[1])
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # `ip link set lo up`
    request = struct.pack("16sh22x", b"lo", 0)
    flags = struct.unpack("16sh22x", fcntl.ioctl(sock, 0x8913, request))[1]  # SIOCGIFFLAGS
    fcntl.ioctl(sock, 0x8914, struct.pack("16sh22x", b"lo", flags | 0x1))  # SIOCSIFFLAGS, IFF_UP

def run(command, env):
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    return [done.returncode, done.stdout + done.stderr]

report, nodes, init = {}, [], None
try:
    for command, folder in zip(spec["nodes"], spec["folders"]):
        log = open(folder + "/server.log", "w")
        nodes.append(subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT))
    init = subprocess.Popen(spec["init"], env=spec["init_env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while run(spec["owner_check"], spec["init_env"])[0] != 0 and init.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # as Docker does: run the health check again until it passes
    report["owner_check"] = run(spec["owner_check"], spec["init_env"])
    report["node_checks"] = [run(check, env) for check, env in zip(spec["node_checks"], spec["node_envs"])]
    cluster = RedisCluster(host="127.0.0.1", port=7001, decode_responses=True)
    keys = [f"course:docker:{n}" for n in range(20)]
    for key in keys:
        cluster.set(key, key)
    report["values"] = [cluster.get(key) for key in keys]
    report["addresses"] = sorted({(node.host, node.port) for node in cluster.get_nodes()})
    cluster.close()
    init.send_signal(signal.SIGTERM)  # `docker compose stop`
    report["init_exit"] = init.wait(timeout=10)
finally:
    if init is not None and init.poll() is None:
        init.kill()
        init.wait()
    report["init_output"] = init.stdout.read() if init is not None else ""
    for node in nodes:
        node.terminate()
    for node in nodes:
        node.wait(timeout=10)
    print(json.dumps(report))
'''


def _in_container(command: list[str]) -> list[str]:
    """A compose command or health check, with docker/ where the containers mount it."""
    if command[0] == "CMD":
        command = command[1:]
    return [part.replace(MOUNT, str(SCRIPTS)) for part in command]


def test_compose_cluster_commands_form_a_cluster_in_their_own_namespace(compose, redis_cli, tmp_path):
    """The closest thing to `docker compose up --wait` without Docker: the nodes' exact command lines
    and the init service's command in one fresh network namespace, where ports 7001-7006 are free."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode != 0:
        pytest.skip("no `unshare -rn` here (user and network namespaces), so the compose commands cannot "
                    "run on their own ports; the scripts are still tested on free ports above")
    services = compose["services"]
    binary = find_binary().path
    base = {key: value for key, value in os.environ.items() if not key.startswith(("CLUSTER_", "REDISCLI_"))}
    base["REDIS_CLI"] = redis_cli
    owner_env = {**base, **services[OWNER]["environment"], "CLUSTER_INIT_TIMEOUT": "30"}
    folders = []
    for name in NODES:
        folders.append(str(tmp_path / name))
        Path(folders[-1]).mkdir()
    spec = {
        "nodes": [[binary, *services[name]["command"][1:]] for name in NODES],
        "folders": folders,
        "init": _in_container(services[OWNER]["command"]),
        "init_env": owner_env,
        "owner_check": _in_container(services[OWNER]["healthcheck"]["test"]),
        "node_checks": [_in_container(services[name]["healthcheck"]["test"]) for name in NODES],
        "node_envs": [{**base, **services[name]["environment"]} for name in NODES],
    }
    done = subprocess.run([unshare, "-rn", sys.executable, "-c", NAMESPACE_PROGRAM, json.dumps(spec)],
                          capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["owner_check"][0] == 0, report
    assert "creating the cluster" in report["init_output"], report["init_output"]
    assert all(code == 0 for code, _ in report["node_checks"]), report["node_checks"]
    assert report["values"] == [f"course:docker:{n}" for n in range(20)]
    # What a client learns from the cluster: 127.0.0.1 and the published ports, nothing else.
    assert report["addresses"] == [["127.0.0.1", port] for port in CLUSTER_PORTS]
    assert report["init_exit"] == 0, report["init_output"]
