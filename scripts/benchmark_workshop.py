"""A simulated workshop: N learner processes working against one room server, and the board following.

    .venv/bin/python scripts/benchmark_workshop.py [--learners 30] [--seconds 20] [--bind 127.0.0.1]

Each learner is a process with its own ACL user (from a real `workshop.start` room) and runs, in
a loop, the chapters' patterns under the same key names as every other learner, as the notebooks
do (each learner's keys live in their own database): cache-aside GET/SET EX (02), a fixed-window rate
limit with a MULTI INCR+EXPIRE (05), a leaderboard ZINCRBY/ZREVRANGE (01), an XADD/XRANGE event log
(04), a session HSET/HGETALL with EXPIRE (06), a WATCH/MULTI transfer (08), and every few loops a
"check" outcome reported to the board (`workshop.report`, what `check()` does). The instructor's
`Board` follows in this process with XREAD BLOCK and measures each entry's lag (seen - written).

Isolation is checked during the run: each learner tries to reach its neighbour's database and
channel (every attempt must be refused) and, at the end, verifies that its counter, a key name all
learners INCR, holds exactly its own increments. Prints p50/p99 of what learners waited per operation, throughput, the board's lag,
and the isolation result. A benchmark, not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from course_lib import workshop  # noqa: E402
from course_lib.seat import parse_join_line  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def learner(join_line: str, neighbour: str, neighbour_db: int, seconds: float, start_at: float, results) -> None:
    seat = parse_join_line(join_line)
    prefix = "course:benchmark:"  # the same names for everyone, as in the chapters
    client = workshop.room_client(seat)
    waits: list[float] = []
    refused = violations = loops = reports = 0

    def timed(operation):
        began = time.perf_counter()
        value = operation()
        waits.append(time.perf_counter() - began)
        return value

    def transfer():
        with client.pipeline() as pipe:
            for _ in range(5):  # bounded retries, as chapter 08 teaches
                try:
                    pipe.watch(prefix + "account:a")
                    balance = int(pipe.get(prefix + "account:a") or 0)
                    pipe.multi()
                    pipe.set(prefix + "account:a", balance - 1)
                    pipe.incr(prefix + "account:b")
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def limited():
        with client.pipeline(transaction=True) as pipe:
            pipe.incr(prefix + "limit:window")
            pipe.expire(prefix + "limit:window", 60)
            return pipe.execute()

    while time.time() < start_at:  # every process starts at once
        time.sleep(0.001)
    deadline = start_at + seconds
    while time.time() < deadline:
        loops += 1
        if timed(lambda: client.get(prefix + "cache:user:1")) is None:
            timed(lambda: client.set(prefix + "cache:user:1", '{"name": "Ada"}', ex=30))
        timed(limited)
        timed(lambda: client.zincrby(prefix + "board", 1, "me"))
        timed(lambda: client.zrevrange(prefix + "board", 0, 9, withscores=True))
        timed(lambda: client.xadd(prefix + "events", {"n": loops}, maxlen=1000, approximate=True))
        timed(lambda: client.xrange(prefix + "events", "-", "+", count=10))
        timed(lambda: client.hset(prefix + "session", mapping={"user": seat.learner, "seen": loops}))
        timed(lambda: client.expire(prefix + "session", 1800))
        timed(lambda: client.hgetall(prefix + "session"))
        timed(transfer)
        timed(lambda: client.incr(prefix + "mine"))
        if loops % 10 == 0:
            reports += timed(lambda: workshop.report("data_types.check_top_scores", "passed", seat))
            for attempt in (lambda: client.execute_command("SELECT", neighbour_db),
                            lambda: client.publish(f"course:{neighbour}:chat", "hi")):
                try:
                    attempt()
                    violations += 1
                except redis.exceptions.NoPermissionError:
                    refused += 1
    if int(client.get(prefix + "mine")) != loops:  # nobody else changed my counter
        violations += 1
    results.put({"waits": waits, "refused": refused, "violations": violations, "loops": loops, "reports": reports})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--bind", default="127.0.0.1")
    args = parser.parse_args()
    names = [f"learner{index:02d}" for index in range(args.learners)]
    folder = tempfile.mkdtemp(prefix="course-bench-room-")
    room = workshop.start("\n".join(names), bind=args.bind, folder=folder)
    try:
        if room.engine != "Valkey":  # learners share one database there: the chapters cannot run in it
            print(f"error: the room runs {room.engine}; unset COURSE_SERVER_BINARY to use the bundled Valkey",
                  file=sys.stderr)
            return 2
        board = workshop.Board(room)
        results = multiprocessing.get_context("fork").Queue()
        start_at = time.time() + 1.0
        processes = [multiprocessing.get_context("fork").Process(
            target=learner, args=(room.join_line(name), neighbour, room.learners[neighbour]["db"], args.seconds,
                                  start_at, results))
            for name, neighbour in zip(names, names[1:] + names[:1])]
        for process in processes:
            process.start()
        collected = []
        seen = 0
        limit = start_at + args.seconds + 60  # bounded: a stuck learner cannot hold the benchmark forever
        while len(collected) < len(processes) and time.time() < limit:
            seen += board.poll(block_ms=200)
            while not results.empty():
                collected.append(results.get())
        seen += board.poll()
        for process in processes:
            process.join(timeout=10)
        waits = [wait * 1000 for result in collected for wait in result["waits"]]
        operations = len(waits)
        reports = sum(result["reports"] for result in collected)
        print(f"room: {room.engine} on {room.host}:{room.port}; {len(collected)}/{len(processes)} learners "
              f"finished {args.seconds:.0f} s of work")
        print(f"operations: {operations} ({operations / args.seconds:.0f}/s); per operation "
              f"p50 {_percentile(waits, 0.5):.2f} ms, p99 {_percentile(waits, 0.99):.2f} ms, max {max(waits):.1f} ms")
        print(f"board: {reports} reports sent, {seen} seen; lag p50 {_percentile(board.lag_ms, 0.5):.0f} ms, "
              f"p99 {_percentile(board.lag_ms, 0.99):.0f} ms")
        refused = sum(result["refused"] for result in collected)
        violations = sum(result["violations"] for result in collected)
        print(f"isolation: {refused} cross-learner attempts refused, {violations} violations")
        print(f"mean loops per learner: {statistics.mean(result['loops'] for result in collected):.0f}")
        return 0 if violations == 0 and len(collected) == len(processes) and seen == reports else 1
    finally:
        workshop.stop(folder)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
