"""Reference solutions to chapter 02's exercises; `tests/test_caching.py` proves the checkers accept them."""

from __future__ import annotations

import json
import re
import secrets
import time

from course_lib.caching import release_lock


def get_cached(client, cache_key, load):
    hit = client.get(cache_key)
    if hit is not None:
        return json.loads(hit)
    value = load()
    client.set(cache_key, json.dumps(value), ex=30 if value is None else 300)
    return value


def invalidate_prefix(client, prefix):
    if not prefix:
        raise ValueError("an empty prefix would name every key of the server")
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"  # the prefix matches only itself
    deleted, cursor = 0, 0
    while True:
        cursor, names = client.scan(cursor, match=pattern, count=500)
        if names:
            deleted += client.unlink(*names)
        if cursor == 0:
            return deleted


def get_cached_once(client, cache_key, load, wait=2.0):
    lock_key = cache_key + ":lock"
    deadline = time.monotonic() + wait
    while True:
        hit = client.get(cache_key)
        if hit is not None:
            return json.loads(hit)
        token = secrets.token_hex(16)
        if client.set(lock_key, token, nx=True, px=10_000):
            try:
                hit = client.get(cache_key)
                if hit is not None:
                    return json.loads(hit)
                value = load()
                client.set(cache_key, json.dumps(value), ex=300)
                return value
            finally:
                release_lock(client, lock_key, token)
        if time.monotonic() > deadline:
            return load()
        time.sleep(0.005)  # another app server is loading: poll the cache
