"""A small shop in SQLite, the real database behind chapter 02's cache: users and a large orders table.

The database file is built once from a seeded random generator (so every run sees the same
rows), in one transaction with `executemany`, in a second or two, and kept in the runtime folder
(`course_lib.runtime.runtime_dir()`, git-ignored) under a name that carries `SCHEMA_VERSION`;
bump it when the schema or the data change and the next run builds a fresh file.

Each `Shop` works on its own copy of that file, so experiments that update or delete rows never
change what the next run starts from. `Shop.queries` counts every query sent to SQLite: that
count is the "database load" the chapter's cache is measured against.

Tables:
- `users(id INTEGER PRIMARY KEY, name, email, country)`: `USERS` rows, ids 1..USERS;
- `orders(id INTEGER PRIMARY KEY, user_id, amount_cents, ordered_at)`: `ORDERS` rows and,
  on purpose, no index on `user_id`, which makes `customer_report` a full scan plus a sort.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import tempfile
import threading
import weakref
from pathlib import Path

SCHEMA_VERSION = 1
USERS = 10_000
ORDERS = 500_000
SEED = 2024
COUNTRIES = ("BR", "DE", "FR", "IN", "JP", "KR", "NG", "US")

REPORT_SQL = """
WITH totals AS (
    SELECT user_id, COUNT(*) AS orders, SUM(amount_cents) AS spent_cents FROM orders GROUP BY user_id
)
SELECT u.id, u.name, u.country, COALESCE(t.orders, 0), COALESCE(t.spent_cents, 0),
       (SELECT COUNT(*) FROM totals AS other WHERE other.spent_cents > COALESCE(t.spent_cents, 0)) + 1
FROM users AS u LEFT JOIN totals AS t ON t.user_id = u.id
WHERE u.id = ?
"""


def database_path() -> Path:
    """Where the built database lives: `<runtime folder>/shop-v<SCHEMA_VERSION>.db`."""
    from course_lib.runtime import runtime_dir

    return runtime_dir() / f"shop-v{SCHEMA_VERSION}.db"


def _is_built(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
            return con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    except sqlite3.Error:
        return False


def build_database(path: str | os.PathLike | None = None) -> Path:
    """Build the shop database at `path` (default `database_path()`) unless a current one is there.

    The rows come from `random.Random(SEED)`, so every build holds the same data. The file is
    written under a temporary name and renamed into place, so a concurrent reader (another kernel,
    a test run) sees either no database or a complete one.

    Returns:
        The path of the built database.
    """
    target = Path(path) if path is not None else database_path()
    if _is_built(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    partial.unlink(missing_ok=True)
    rng = random.Random(SEED)
    con = sqlite3.connect(partial)
    try:
        # A throw-away build file needs no rollback journal and no fsync.
        con.execute("PRAGMA journal_mode = OFF")
        con.execute("PRAGMA synchronous = OFF")
        with con:
            con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                        "email TEXT NOT NULL, country TEXT NOT NULL)")
            con.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, "
                        "amount_cents INTEGER NOT NULL, ordered_at TEXT NOT NULL)")
            con.executemany("INSERT INTO users VALUES (?, ?, ?, ?)", (
                (i, f"user {i}", f"user{i}@example.com", COUNTRIES[i % len(COUNTRIES)]) for i in range(1, USERS + 1)
            ))
            draw = rng.randrange
            con.executemany("INSERT INTO orders (user_id, amount_cents, ordered_at) VALUES (?, ?, ?)", (
                (draw(1, USERS + 1), draw(100, 50_000), f"2024-{draw(1, 13):02d}-{draw(1, 29):02d}")
                for _ in range(ORDERS)
            ))
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    finally:
        con.close()
    os.replace(partial, target)
    return target


class Shop:
    """A private working copy of the shop database, safe to use from several threads.

    Each thread gets its own SQLite connection (SQLite runs reads from several connections in
    parallel), and `queries` counts every query any of them sent.

    Args:
        path: the built database to copy (default: `build_database()`).
    """

    def __init__(self, path: str | os.PathLike | None = None):
        source = Path(path) if path is not None else build_database()
        self._folder = tempfile.mkdtemp(prefix="course-shop-")
        self.path = Path(self._folder) / "shop.db"
        shutil.copyfile(source, self.path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.queries = 0
        self._cleanup = weakref.finalize(self, _remove, self._connections, self._folder)

    def _execute(self, sql: str, params: tuple = ()) -> list[tuple]:
        con = getattr(self._local, "con", None)
        if con is None:
            # check_same_thread=False only so that close() may close every thread's connection.
            con = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
            self._local.con = con
            with self._lock:
                self._connections.append(con)
        with self._lock:
            self.queries += 1
        with con:
            return con.execute(sql, params).fetchall()

    def user(self, user_id: int) -> dict | None:
        """One user by primary key: a fast query (an index lookup). None if there is no such user."""
        rows = self._execute("SELECT id, name, email, country FROM users WHERE id = ?", (user_id,))
        return dict(zip(("id", "name", "email", "country"), rows[0])) if rows else None

    def customer_report(self, user_id: int) -> dict | None:
        """A user's order count, total spent and rank among all customers: the slow query.

        It aggregates every order (no index on `orders.user_id`: a full scan and a sort), about
        0.1-0.2 s on a laptop. None if there is no such user.
        """
        rows = self._execute(REPORT_SQL, (user_id,))
        if not rows:
            return None
        fields = ("id", "name", "country", "orders", "spent_cents", "rank")
        return dict(zip(fields, rows[0]))

    def update_user(self, user_id: int, name: str) -> dict | None:
        """Rename a user and return the updated row (one UPDATE ... RETURNING). None if there is no such user."""
        rows = self._execute("UPDATE users SET name = ? WHERE id = ? RETURNING id, name, email, country",
                             (name, user_id))
        return dict(zip(("id", "name", "email", "country"), rows[0])) if rows else None

    def delete_user(self, user_id: int) -> bool:
        """Delete a user (their orders stay, as history). True if a row was deleted."""
        return bool(self._execute("DELETE FROM users WHERE id = ? RETURNING id", (user_id,)))

    def close(self) -> None:
        """Close every connection and delete the working copy."""
        self._cleanup()

    def __enter__(self) -> "Shop":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _remove(connections: list[sqlite3.Connection], folder: str) -> None:
    for con in connections:
        con.close()
    shutil.rmtree(folder, ignore_errors=True)
