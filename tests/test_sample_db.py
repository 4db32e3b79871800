"""The shop database: built once and reused, deterministic, private working copies, a slow query that is slow."""

import shutil
import sqlite3
import time

import pytest

from course_lib import sample_db
from course_lib.concurrency import run_together
from course_lib.sample_db import Shop, build_database, database_path

pytestmark = pytest.mark.engine_agnostic  # SQLite only


@pytest.fixture
def shop():
    with Shop() as working_copy:
        yield working_copy


def test_build_is_cached_in_the_runtime_folder():
    path = build_database()
    assert path == database_path() and path.parent.name and path.name == f"shop-v{sample_db.SCHEMA_VERSION}.db"
    modified = path.stat().st_mtime_ns
    assert build_database() == path and path.stat().st_mtime_ns == modified
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT COUNT(*) FROM users").fetchone()[0] == sample_db.USERS
        assert con.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == sample_db.ORDERS
        assert con.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index'").fetchone()[0] == 0


def test_a_file_of_another_schema_version_is_rebuilt_identically(tmp_path):
    stale = tmp_path / "shop.db"
    with sqlite3.connect(stale) as con:
        con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    start = time.perf_counter()
    assert build_database(stale) == stale
    assert time.perf_counter() - start < 30  # a few seconds normally; generous for a loaded CI
    with Shop(stale) as rebuilt, Shop() as reference:
        assert rebuilt.customer_report(42) == reference.customer_report(42)
    assert not list(tmp_path.glob("*.tmp"))


def test_user_lookup_update_and_delete(shop):
    assert shop.user(42) == {"id": 42, "name": "user 42", "email": "user42@example.com", "country": "FR"}
    assert shop.user(sample_db.USERS + 1) is None
    assert shop.update_user(42, "Ada")["name"] == "Ada" and shop.user(42)["name"] == "Ada"
    assert shop.update_user(sample_db.USERS + 1, "Nobody") is None
    assert shop.delete_user(42) is True and shop.delete_user(42) is False and shop.user(42) is None
    assert shop.queries == 8


def test_each_shop_is_a_private_copy(shop):
    shop.update_user(7, "changed")
    with Shop() as other:
        assert other.user(7)["name"] == "user 7"
    path = shop.path
    shop.close()
    assert not path.exists()


def test_customer_report_is_a_genuinely_slow_aggregate(shop):
    start = time.perf_counter()
    report = shop.customer_report(42)
    elapsed = time.perf_counter() - start
    assert report == {"id": 42, "name": "user 42", "country": "FR", "orders": 51, "spent_cents": 1112668, "rank": 7436}
    assert elapsed > 0.03  # ~0.17 s here: a full scan and a sort, no sleep
    assert shop.customer_report(sample_db.USERS + 1) is None


def test_queries_from_threads_are_all_counted(shop):
    run_together(lambda slot: shop.user(slot + 1), 20, timeout=60, what="shop users")
    assert shop.queries == 20


def test_shop_accepts_an_explicit_database(tmp_path):
    copy = tmp_path / "copy.db"
    shutil.copyfile(build_database(), copy)
    with Shop(copy) as shop:
        assert shop.user(1)["name"] == "user 1"
