"""The compose stack on a real Docker engine, checked while it runs: from the host and from containers.

These run only inside `scripts/compose_ci.sh` (CI's third configuration), which brings
docker-compose.yml up, points COURSE_REDIS_URL / COURSE_CLUSTER_URL at it and names its project in
COURSE_COMPOSE_PROJECT; anywhere else they skip with the reason. The file itself, its scripts and the
override that breaks it are checked without an engine in tests/test_docker_compose.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from course_lib.concurrency import wait_for
from course_lib.connection import connect, connect_cluster
from course_lib.settings import CLUSTER_URL_SETTING, REDIS_URL_SETTING

pytestmark = pytest.mark.engine_agnostic  # the image's Redis, whatever engine the course would embed

REPO = Path(__file__).resolve().parent.parent
PROJECT = os.environ.get("COURSE_COMPOSE_PROJECT", "")
CLUSTER_PORTS = list(range(7001, 7007))
KEYS = [f"course:compose:{n}" for n in range(20)]  # spread over all three primaries


def _docker(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done


@pytest.fixture(scope="module")
def stack() -> dict[str, dict]:
    """The running stack's containers, by service name (`docker inspect` of each)."""
    if not PROJECT:
        reason = "no composed stack: scripts/compose_ci.sh runs these tests against the one it starts"
        if shutil.which("docker") is None:
            reason += " (it needs a Docker engine; there is no docker command here)"
        pytest.skip(reason)
    ids = _docker("ps", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}").stdout.split()
    assert ids, f"no running container of compose project {PROJECT}"
    containers = json.loads(_docker("inspect", *ids).stdout)
    return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in containers}


def _image(stack) -> str:
    return stack["redis"]["Config"]["Image"]


def test_every_container_is_running_and_healthy(stack):
    assert set(stack) == {"redis", "redis-cluster", *(f"redis-node-{n}" for n in range(1, 7))}
    assert {name: (c["State"]["Status"], c["State"]["Health"]["Status"]) for name, c in stack.items()} == {
        name: ("running", "healthy") for name in stack}
    assert len({c["Config"]["Image"] for c in stack.values()}) == 1


def test_the_course_settings_reach_the_containers(stack):
    """The URLs the suite ran with name these containers: the same server answers inside each one."""
    assert os.environ[REDIS_URL_SETTING].startswith("redis://127.0.0.1:")
    assert os.environ[CLUSTER_URL_SETTING] == "redis://127.0.0.1:7001"
    client = connect()
    try:
        inside = _docker("exec", stack["redis"]["Id"], "redis-cli", "info", "server").stdout
        assert f"run_id:{client.info('server')['run_id']}" in inside
        # From the host, a client arrives through Docker's port publishing, not from loopback: why the
        # compose file turns protected mode off on the command line.
        assert not client.client_info()["addr"].startswith("127.")
        assert client.config_get("protected-mode") == {"protected-mode": "no"}
    finally:
        client.close()


def test_the_image_alone_refuses_host_clients_in_protected_mode(stack):
    """Without the compose file's --protected-mode no (the entrypoint replaced by plain redis-server,
    as in any image without the official entrypoint), a host client is refused: the defect it fixes."""
    container = _docker("run", "-d", "--entrypoint", "redis-server", "-p", "127.0.0.1::6379", _image(stack)).stdout.strip()
    try:
        port = int(_docker("port", container, "6379/tcp").stdout.split(":")[-1])
        client = redis.Redis(port=port, socket_timeout=2, retry=None)

        def refused() -> str | None:
            try:
                client.ping()
                return "answered PING"
            except redis.ResponseError as exc:  # DENIED, once it listens
                return str(exc)
            except redis.ConnectionError:  # refused or reset: not listening yet
                return None

        assert wait_for(refused, 30, "the plain server to answer").startswith("DENIED Redis is running in protected mode")
        client.close()
    finally:
        _docker("rm", "-f", "-v", container)


def test_the_cluster_from_the_host_announces_loopback(stack):
    cluster = connect_cluster()
    try:
        assert sorted((node.host, node.port) for node in cluster.get_nodes()) == [("127.0.0.1", p) for p in CLUSTER_PORTS]
        slots = cluster.cluster_slots(target_nodes=RedisCluster.RANDOM)  # {(start, end): {primary, replicas}}
        assert {address[0] for entry in slots.values() for address in [entry["primary"], *entry["replicas"]]} == {"127.0.0.1"}
        assert sorted(len(entry["replicas"]) for entry in slots.values()) == [1, 1, 1]
        for key in KEYS:
            cluster.set(key, key)
        assert [cluster.get(key) for key in KEYS] == KEYS
        assert len({cluster.get_node_from_key(key).port for key in KEYS}) == 3  # every primary
        # Node 3 seen from the host is the container redis-node-3.
        inside = _docker("exec", stack["redis-node-3"]["Id"], "redis-cli", "-p", "7003", "cluster", "myid").stdout
        assert cluster.get_node("127.0.0.1", 7003).redis_connection.execute_command("CLUSTER MYID") == inside.strip()
    finally:
        for key in KEYS:
            cluster.delete(key)
        cluster.close()


def test_the_cluster_from_another_container(stack):
    """A container that joins the cluster's namespace (network_mode: service:redis-cluster, here
    `--network container:`) follows MOVED to the same 127.0.0.1 addresses the host uses, and finds
    the cluster healthy; a container on the project's network reaches the standalone by name."""
    owner = stack["redis-cluster"]["Id"]
    cluster = connect_cluster()
    client = connect()
    try:
        for key in KEYS:
            cluster.set(key, f"from the host: {key}")
        client.set("course:compose:standalone", "from the host")
        reads = "; ".join(f"redis-cli -c -p 7001 get {key}" for key in KEYS)
        joined = _docker("run", "--rm", "--network", f"container:{owner}", "-v", f"{REPO / 'docker'}:/course-docker:ro",
                         _image(stack), "sh", "-c", f"{reads}; sh /course-docker/cluster-healthcheck.sh").stdout
        assert joined.splitlines() == [f"from the host: {key}" for key in KEYS] + [
            "cluster ok: 6 nodes, 3 primaries (checked 7001 7002 7003 7004 7005 7006)"]

        network = next(iter(stack["redis"]["NetworkSettings"]["Networks"]))
        by_name = _docker("run", "--rm", "--network", network, _image(stack),
                          "redis-cli", "-h", "redis", "get", "course:compose:standalone").stdout
        assert by_name.strip() == "from the host"
    finally:
        for key in KEYS:
            cluster.delete(key)
        client.delete("course:compose:standalone")
        cluster.close()
        client.close()
