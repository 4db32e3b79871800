"""Checkers for chapter 09's exercises (see `course_lib.exercises` for the pattern).

Keys written, all under `course:cluster:exercise:` on the cluster client given: `check_transaction_keys`
writes the three keys the solution names for one user (strings). `evaluate` deletes them before
and after each check. Pass the cluster client: `check(check_transaction_keys, solution, client=rc)`.
"""

from __future__ import annotations

from course_lib.cluster import crc16, key_slot
from course_lib.exercises import ExerciseFailed, exercise_prefix

USERS = range(1, 61)
TRICKY_KEYS = ["user:42", "user:{42}:cart", "{user:42}:orders", "a{b}{c}", "{}x{y}", "a{b", "}{x}",
               "{{a}}", "{}", "x{}y", "order:{2024-05}:{eu}", "", "ünïcödé:{é}"]


def check_transaction_keys(client, solution) -> None:
    """Keys for one transaction

    `solution(prefix, user_id)` returns the names of a user's (cart, orders, profile) keys, all
    starting with `prefix`, so that one MULTI/EXEC on a cluster can use all three.
    """
    prefix = exercise_prefix(check_transaction_keys)
    names = {user: tuple(solution(prefix, user)) for user in USERS}
    for user, keys in names.items():
        if len(keys) != 3 or len(set(keys)) != 3:
            raise ExerciseFailed(f"user {user}: return three different key names, got {keys!r:.100}")
        if not all(isinstance(name, str) and name.startswith(prefix) for name in keys):
            raise ExerciseFailed(f"every name must start with the prefix {prefix!r}, got {keys!r:.100}")
        if len({key_slot(name) for name in keys}) != 1:
            raise ExerciseFailed(f"user {user}'s keys hash to different slots ({sorted({key_slot(n) for n in keys})}): "
                                 "give them a common hash tag, the part in {braces}")
    if len({key for keys in names.values() for key in keys}) != 3 * len(USERS):
        raise ExerciseFailed("two users got the same key name: put the user id in every name")
    slots = {key_slot(keys[0]) for keys in names.values()}
    if len(slots) < len(USERS) // 2:
        raise ExerciseFailed(f"{len(USERS)} users share only {len(slots)} slot(s): a tag common to ALL users puts "
                             "every user on one shard (a hot slot); tag by the user, e.g. {user:<id>}")
    cart, orders, profile = names[USERS[0]]
    with client.pipeline(transaction=True) as pipe:
        pipe.set(cart, "2 books")
        pipe.incr(orders)
        pipe.set(profile, "Ada")
        pipe.execute()


def check_key_slot(client, solution) -> None:
    """A key's slot, computed like the server

    `solution(key)` returns the key's hash slot (0..16383); `crc16(bytes)` from course_lib.cluster
    may be used. Compared with CLUSTER KEYSLOT for keys with and without (odd) hash tags.
    """
    for name in TRICKY_KEYS:
        expected = client.cluster_keyslot(name)
        got = solution(name)
        if got == expected:
            continue
        if got == crc16(name.encode()) % 16384:
            raise ExerciseFailed(f"{name!r}: you hashed the whole key, but its first non-empty {{tag}} is what counts")
        if not isinstance(got, int) or not 0 <= got < 16384:
            raise ExerciseFailed(f"{name!r}: a slot is an int from 0 to 16383, got {got!r:.40}")
        raise ExerciseFailed(f"{name!r}: expected slot {expected}, got {got}. Only the FIRST '{{' and the first "
                             "'}' after it count, and an empty tag '{}' means the whole key is hashed")
