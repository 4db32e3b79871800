"""Checkers for chapter 09's exercises (see `course_lib.exercises` for the pattern).

Keys written, all under `course:cluster:exercise:` on the cluster client given: `check_transaction_keys`
writes, in one MULTI/EXEC each, the three keys the solution names for two users (strings).
`check_key_slot` writes nothing. `evaluate` deletes the prefix before and after each check. Pass the
cluster client: `check(check_transaction_keys, solution, client=rc)`.
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from numbers import Integral

import redis

from course_lib import cluster
from course_lib.cluster import SLOTS, crc16, hashed_part, key_slot
from course_lib.exercises import ExerciseFailed, exercise_prefix, returned

# User 0, ids sharing digits (1, 11, 111), and one far beyond the others.
USER_IDS = [0, *range(1, 112), 10**9]
# At least this share of the users must land in slots of their own: a tag shared by a group of
# users (a bucket, a type of data) is a hot slot. Tags that differ per user put 113 users in 113
# slots, give or take a chance collision or two.
DISTINCT_SLOTS_SHARE = 0.9
# Plain keys first, then one tag, then the odd cases, then non-ASCII text (hashed as UTF-8 bytes).
TRICKY_KEYS = ["user:42", "", "user:{42}:cart", "{user:42}:orders", "a{b}{c}", "order:{2024-05}:{eu}",
               "{}x{y}", "{}", "x{}y", "a{}{b}", "a{b", "}{x}", "a}b{c}", "{{a}}", "{a}}", "{{}}",
               "ünïcödé", "ünïcödé:{é}", "🔑{🚪}"]


def check_transaction_keys(client, solution) -> None:
    """Keys for one transaction

    `solution(prefix, user_id)` returns the names of a user's (cart, orders, profile) keys: a tuple
    (or list) of three different `str`, each starting with `prefix`, for any user id (an int >= 0).
    Properties checked:
    - one slot per user: the three keys hash to one slot, so one MULTI/EXEC on the cluster can
      use them together (run for real, through `client`, for two users);
    - no hot slot: different users land in different slots (at least 90 % of 113 users in slots
      of their own), so users spread over every shard instead of piling onto one;
    - no two users share a key name (user ids 1, 11 and 111 included).
    """
    prefix = exercise_prefix(check_transaction_keys)
    names = {}
    for user in USER_IDS:
        keys = returned(solution(prefix, user), (tuple, list), "a tuple of three key names (cart, orders, profile)")
        if len(keys) != 3:
            raise ExerciseFailed(f"user {user}: return three key names (cart, orders, profile), got {keys!r:.120}")
        if not all(isinstance(name, str) for name in keys):
            raise ExerciseFailed(f"user {user}: key names must be str, got {[type(n).__name__ for n in keys]}")
        if len(set(keys)) != 3:
            raise ExerciseFailed(f"user {user}: return three different key names, got {keys!r:.120}")
        if not all(name.startswith(prefix) for name in keys):
            raise ExerciseFailed(f"every name must start with the prefix {prefix!r}, got {keys!r:.120}")
        if len({key_slot(name) for name in keys}) != 1:
            raise ExerciseFailed(_why_slots_differ(user, keys))
        names[user] = tuple(keys)
    owners = Counter(name for keys in names.values() for name in keys)
    shared = sorted(name for name, count in owners.items() if count > 1)
    if shared:
        raise ExerciseFailed(f"two users got the same key name ({shared[0]!r}): each user needs names of their own")
    slots = Counter(key_slot(keys[0]) for keys in names.values())
    if len(slots) < DISTINCT_SLOTS_SHARE * len(USER_IDS):
        crowded = max(slots.values())
        raise ExerciseFailed(f"{len(USER_IDS)} users share only {len(slots)} slot(s) (up to {crowded} users in one): "
                             "a hash tag common to many users puts them all in one slot, on one shard (a hot slot)")
    for user in (USER_IDS[1], USER_IDS[-1]):
        cart, orders, profile = names[user]
        with client.pipeline(transaction=True) as tx:  # RedisCluster refuses a MULTI whose keys span slots
            tx.set(cart, "2 books").incr(orders).set(profile, "Ada")
            tx.execute()
        if client.mget(cart, orders, profile) != ["2 books", "1", "Ada"]:
            raise ExerciseFailed(f"user {user}: the transaction's three writes did not all land")


def _why_slots_differ(user, keys) -> str:
    """The hint for a user whose keys span slots: no tag, an empty first `{}`, or tags that differ."""
    parts = [hashed_part(name) for name in keys]
    empty = [name for name in keys if "{" in name and name[name.find("{") + 1:].startswith("}")]
    if empty:
        return (f"user {user}: in {empty[0]!r} the first '{{' is followed directly by '}}': an empty tag makes "
                "the server hash the whole key, so the three keys land in different slots")
    if parts == list(keys):
        return f"user {user}: the keys have no hash tag, so each is hashed whole and they land in different slots"
    return (f"user {user}: the keys' hash tags differ ({', '.join(map(repr, parts))}), so they land in "
            "different slots: MULTI/EXEC (and MSET, Lua) would be refused with CROSSSLOT")


def check_key_slot(client, solution) -> None:
    """A key's slot, computed like the server

    `solution(key)` returns the hash slot of `key` (a `str`) as an int from 0 to 16383, equal to
    CLUSTER KEYSLOT's answer: CRC16 (`crc16(bytes)` from course_lib.cluster) of the key's UTF-8
    bytes, modulo 16384 - of the whole key, or only of its hash tag: the text between the key's
    first `{` and the first `}` after it, when that text is not empty. An empty first tag (`{}x{y}`)
    means the whole key is hashed, with no search for a later tag. Computed in Python: asking the
    server (CLUSTER KEYSLOT, or anything else through redis-py) or calling the course's own
    `key_slot` / `hashed_part` does not count. Checked on keys without braces, the empty key, one
    or several tags, empty tags, nested or unbalanced braces, and non-ASCII text.
    """
    for name in TRICKY_KEYS:
        expected = client.cluster_keyslot(name)
        got, borrowed = _computed_alone(solution, name)
        if borrowed:
            raise ExerciseFailed(f"{name!r}: your function called {borrowed}: compute the slot yourself, "
                                 "with crc16 and the hash-tag rule")
        if isinstance(got, bool) or not isinstance(got, Integral):
            returned(got, (), "the slot, an int from 0 to 16383")
        if not 0 <= got < SLOTS:
            raise ExerciseFailed(f"{name!r}: a slot is an int from 0 to 16383 (CRC16 modulo 16384), got {got}")
        if got != expected:
            raise ExerciseFailed(f"{name!r}: expected slot {expected}, got {got}: {_mistake(name, got)}")


def _computed_alone(solution, name):
    """`solution(name)`, and what it borrowed: a redis-py function (a command to the server, or
    redis-py's own slot code) or the course's `key_slot`/`hashed_part`, seen with `sys.setprofile`."""
    redis_folder = os.path.dirname(redis.__file__) + os.sep
    course_code = {cluster.key_slot.__code__: "the course's key_slot", cluster.hashed_part.__code__:
                   "the course's hashed_part"}
    borrowed = []

    def watch(frame, event, _arg):
        if event == "call" and not borrowed:
            code = frame.f_code
            if code in course_code:
                borrowed.append(course_code[code])
            elif code.co_filename.startswith(redis_folder):
                borrowed.append(f"redis-py ({code.co_name})")

    previous = sys.getprofile()
    sys.setprofile(watch)
    try:
        got = solution(name)
    finally:
        sys.setprofile(previous)
    return got, borrowed[0] if borrowed else None


def _mistake(name: str, got: int) -> str:
    """Name the misreading of the hash-tag rule that gives `got` for `name`, never the rule's code."""
    def slot(text: str) -> int:
        return crc16(text.encode()) % SLOTS

    start = name.find("{")
    empty_first = start != -1 and name.find("}", start + 1) == start + 1
    later = re.search(r"\{([^}]+)\}", name)
    if hashed_part(name) != name and got == slot(name):
        return "you hashed the whole key, but it has a hash tag, and then only the tag is hashed"
    if empty_first and got == slot(""):
        return "an empty first tag '{}' does not mean 'hash nothing': the server hashes the whole key"
    if empty_first and later and got == slot(later.group(1)):
        return ("the first '{' is followed directly by '}', so the whole key is hashed: the server does not "
                "go on looking for a later, non-empty tag")
    if not name.isascii():
        return "the server hashes the key's UTF-8 bytes (what redis-py sends), not another encoding of the text"
    return "only the FIRST '{' counts, and the first '}' after it (not the last one, not a matching pair)"
