"""Command line: `python -m course_lib up | down | status | lab | progress | reset NN`.

- `up`      start (or reuse) the embedded servers and keep them until `down`;
            `up --env` prints `export` lines for a shell: `eval "$(python -m course_lib up --env)"`.
- `down`    stop every embedded server and forget them.
- `status`  a table of the embedded servers: role, port, pid, alive, slots.
- `lab`     bring the servers up, open JupyterLab on notebooks/ with the settings exported to its
            kernels; on exit stop the servers it started (never ones that were already running).
            Extra arguments go to JupyterLab: `python -m course_lib lab --no-browser --port 8899`.
- `progress` exercises solved per chapter, and the next one to do (recorded by every `check()`).
- `reset NN` chapter NN's notebook back to its committed state; your copy is kept as `mine-NN_...`.
- `shape`   (for editors) rewrite every chapter's generated header and navigation cells; markdown only.
- `doctor`  is this machine ready? One line per check (ok, or what to do), then a status to paste.
- `workshop start --roster FILE [--bind ADDRESS] | status | stop | reset LEARNER`: a workshop room
            (see `course_lib.workshop`); `join <join line>` / `join --leave` on a learner's machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import redis

from course_lib import chapters, progress, reset, runtime
from course_lib.concurrency import TimedOut
from course_lib.connection import redact
from course_lib.servers import ServerError
from course_lib.settings import CLUSTER_URL_SETTING, REDIS_URL_SETTING, RUNTIME_DIR_SETTING

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _describe(stack: runtime.Stack) -> str:
    lifetime = "kept until `python -m course_lib down`" if stack.owners is None else "leased; stopped when its users exit"
    password = f"\n  password    in {stack.folder / runtime.PASSWORD_FILE} (owner-only)" if stack.password else ""
    return (f"{stack.engine} ({stack.binary})\n"
            f"  standalone  {redact(stack.redis_url)}\n"
            f"  cluster     {redact(stack.cluster_url)}  (6 nodes: 3 primaries + 3 replicas)\n"
            f"  runtime     {stack.folder}  ({lifetime}){password}")


def _table(rows: list[dict]) -> str:
    columns = ["name", "role", "port", "pid", "alive", "slots"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def cmd_up(args: argparse.Namespace) -> int:
    stack = runtime.up(args.runtime_dir)
    if args.env:
        print("\n".join(f"export {name}={value}" for name, value in stack.settings().items()))
    else:
        print(_describe(stack))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    stopped = runtime.down(args.runtime_dir)
    print("Stopped the embedded servers." if stopped else "No embedded servers were recorded; nothing to stop.")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    rows = runtime.status(args.runtime_dir)
    if not rows:
        print("No embedded servers are running. Start them with `python -m course_lib up`.")
        return 1
    stack = runtime.load(runtime.runtime_dir(args.runtime_dir))
    print(_describe(stack) + "\n\n" + _table(rows))
    return 0 if all(row["alive"] for row in rows) else 1


def cmd_progress(args: argparse.Namespace) -> int:
    print(progress.table())
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    try:
        path, copy = reset.reset(args.chapter)
    except reset.ResetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if copy is None:
        print(f"{path.name} is already as committed; nothing to reset.")
    else:
        print(f"{path.name} is as committed again; your version is kept as {copy.name}. "
              "Reload it in JupyterLab (File > Reload Notebook from Disk).")
    return 0


def cmd_shape(args: argparse.Namespace) -> int:
    changed = chapters.shape_all()
    print("Shaped: " + ", ".join(changed) if changed else "Every chapter already has its shape.")
    for chapter in chapters.CHAPTERS:
        for problem in chapters.problems(json.loads((chapters.NOTEBOOKS / chapter.notebook).read_text()), chapter):
            print(f"{chapter.notebook}: {problem}")
    return 0


def cmd_lab(args: argparse.Namespace, jupyter_args: list[str]) -> int:
    env = dict(os.environ)
    external = all(env.get(name) for name in (REDIS_URL_SETTING, CLUSTER_URL_SETTING))
    stack = None
    if external:
        print(f"Using external servers: {REDIS_URL_SETTING} and {CLUSTER_URL_SETTING} are set.")
    else:
        stack = runtime.up(args.runtime_dir, owner=os.getpid())
        for name, value in stack.settings().items():
            env.setdefault(name, value)
        print(_describe(stack))
    command = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={NOTEBOOKS}", *jupyter_args]
    if os.geteuid() == 0:
        command.append("--allow-root")  # containers and CI machines often run as root; JupyterLab refuses without it
    lab = subprocess.Popen(command, env=env)
    signal.signal(signal.SIGTERM, lambda *_: lab.terminate())
    try:
        while True:
            try:
                return lab.wait()
            except KeyboardInterrupt:
                continue  # JupyterLab received the same Ctrl-C and decides whether to quit; wait for it.
    finally:
        if stack is not None and runtime.release(os.getpid(), stack.folder):
            print("Stopped the embedded servers this session started.")


def cmd_doctor(args: argparse.Namespace) -> int:
    from course_lib import doctor

    return 0 if doctor.run(lab_port=args.lab_port) else 1


def cmd_join(args: argparse.Namespace) -> int:
    from course_lib import workshop

    if args.leave:
        print("Left the workshop." if workshop.leave() else "No workshop was joined.")
        return 0
    if not args.line:
        print("error: give the join line the instructor sent, or --leave", file=sys.stderr)
        return 1
    try:
        seat = workshop.join(args.line)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except redis.RedisError as exc:
        print(f"error: the room did not accept this join line ({exc}); check it, and that you are on the "
              "workshop's network", file=sys.stderr)
        return 1
    print(f"Joined the room at {seat.address} as {seat.learner}: the notebooks' connect() now uses it (restart "
          "`make lab` if it is running). Check with `python -m course_lib doctor`.")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """Fork the watchdog off (see `runtime.watch`); the parent prints its pid and returns at once."""
    child = os.fork()
    if child:
        print(child)
        return 0
    os.setsid()
    quiet = os.open(os.devnull, os.O_RDWR)
    for stream in (0, 1, 2):  # release the starter's pipes, or it would wait for them to close
        os.dup2(quiet, stream)
    try:
        runtime.watch(args.runtime_dir)
    finally:
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--runtime-dir", help=f"runtime folder (default: ${RUNTIME_DIR_SETTING} or <repo>/.runtime)")
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", parents=[common], help="start or reuse the embedded servers")
    up_parser.add_argument("--env", action="store_true", help="print export lines for a shell")
    commands.add_parser("down", parents=[common], help="stop the embedded servers")
    commands.add_parser("status", parents=[common], help="show the embedded servers")
    commands.add_parser("lab", parents=[common], help="servers up + JupyterLab on notebooks/")
    commands.add_parser("progress", help="exercises solved per chapter, and what is next")
    reset_parser = commands.add_parser("reset", help="a chapter's notebook back to its committed state (yours is kept)")
    reset_parser.add_argument("chapter", help="the chapter's number, e.g. 05")
    commands.add_parser("shape", help="(editors) rewrite the chapters' generated header and navigation cells")
    commands.add_parser("watch", parents=[common])
    doctor_parser = commands.add_parser("doctor", help="check this machine is ready for the course")
    doctor_parser.add_argument("--lab-port", type=int, default=8888, help="the port JupyterLab will use")
    commands.add_parser("workshop", add_help=False,  # its own parser (`course_lib.workshop.main`) reads the rest
                        help="run a workshop room: start --roster FILE | status | stop | reset LEARNER")
    join_parser = commands.add_parser("join", help="join a workshop room with the line the instructor sent")
    join_parser.add_argument("line", nargs="?")
    join_parser.add_argument("--leave", action="store_true", help="forget the room")
    args, rest = parser.parse_known_args(argv)
    if args.command == "workshop":
        from course_lib import workshop

        return workshop.main(rest)
    if rest and args.command != "lab":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.command == "lab":
            return cmd_lab(args, rest)
        if args.command == "watch":
            return cmd_watch(args)
        return {"up": cmd_up, "down": cmd_down, "status": cmd_status, "progress": cmd_progress, "shape": cmd_shape,
                "reset": cmd_reset, "doctor": cmd_doctor, "join": cmd_join}[args.command](args)
    except (ServerError, TimedOut) as exc:  # e.g. no server binary; a cluster that did not form in time
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
