"""Graded hints and the reference solutions, for a learner working alone.

In a notebook, after an exercise's `check(...)` cell:

    from course_lib.exercises.hints import hint, show_solution
    hint(check_deduct, 1)        # the idea: which property the exercise is about
    hint(check_deduct, 2)        # the building blocks: which commands, never the code
    show_solution(check_deduct)  # the reference solution, once the exercise has passed (see below)

`show_solution` shows the reference solution only after the exercise passed (as recorded by
`check`, see `course_lib.progress`), or when asked explicitly with `confirm=True`: reading the
answer first teaches much less than getting there.
"""

from __future__ import annotations

import importlib
from typing import Callable

from course_lib import progress

# Exercise id -> (hint 1: the idea, hint 2: the building blocks). Hints name what to think about,
# never the code to write.
HINTS: dict[str, tuple[str, str]] = {
    "data_types.check_top_scores": (
        "A sorted set already keeps its members ordered: let the server pick and order the n best, "
        "and mind what a stop index of n - 1 means when n is 0.",
        "One ZRANGE with REV and WITHSCORES (redis-py: `zrange(..., desc=True, withscores=True)`) "
        "returns (member, score) pairs; treat n = 0 on its own."),
    "data_types.check_capped_log": (
        "Pushing and trimming are two writes: a crash or a reader between them sees a log longer "
        "than allowed. Make them one step.",
        "LPUSH then LTRIM to 0 .. keep - 1, sent together in one MULTI/EXEC (a transactional "
        "pipeline), or in one Lua script."),
    "data_types.check_add_to_cart": (
        "Reading a quantity and writing the sum loses another app server's add that lands in "
        "between; let the server do the addition. Validate before writing anything.",
        "HINCRBY adds atomically and returns the new quantity; raise ValueError for a quantity "
        "below 1 before sending any command."),
    "caching.check_negative_caching": (
        "'No such row' is an answer worth caching too, but for less time than a real row; and only "
        "None means 'no such row'.",
        "Store json.dumps(value) (null for None) with SET ... EX in one command, at most half the EX "
        "for None; on a hit, tell 'not cached' (GET gives None) from 'cached null' (the string 'null')."),
    "caching.check_prefix_invalidation": (
        "KEYS, or one SCAN with a huge COUNT, walks the whole keyspace in one blocking command. "
        "Iterate in small steps, and treat the prefix as literal text, not a pattern.",
        "SCAN with MATCH <escaped prefix>* and a COUNT of a few hundred until the cursor is 0, "
        "UNLINK the names in batches; backslash-escape * ? [ in the prefix; refuse an empty prefix."),
    "caching.check_stampede_lock": (
        "A lock inside one process does not stop the other app servers: the lock must live in Redis, "
        "expire on its own, be released only by its owner, and nobody may wait for ever.",
        "SET lock-key token NX PX (a unique token per caller), re-check the cache once you hold it, "
        "release with a script that deletes only if the value is still your token; waiters poll "
        "the cache with a deadline."),
    "pubsub.check_room_message": (
        "Publish exactly one message, as JSON, on the channel you are given, and return what "
        "the server says about who received it.",
        "PUBLISH channel json.dumps({...}) returns the number of receivers, pattern subscribers "
        "included."),
    "pubsub.check_order_pattern": (
        "A PSUBSCRIBE pattern is a glob: characters such as * ? [ in the prefix would match other "
        "channels, and `orders.` must be followed by something.",
        "Backslash-escape the glob characters of the prefix, then add `orders.` and a wildcard that "
        "needs at least one character."),
    "streams.check_ensure_group": (
        "Workers call this on every start: an existing group must survive untouched, and a group "
        "created by another worker at the same moment is not an error. Only that error is.",
        "XGROUP CREATE ... MKSTREAM with the given start id; catch the ResponseError whose message "
        "starts with BUSYGROUP, and let every other error through."),
    "streams.check_ack_after_processing": (
        "An entry acknowledged before its work is done is lost if the worker dies during the work; "
        "and a read that waits for ever never returns to the caller.",
        "XREADGROUP with COUNT 10, BLOCK 500 and id `>`; call the handler in try/except per entry; "
        "XACK the ones whose handler returned."),
    "streams.check_claim_or_dead_letter": (
        "One XAUTOCLAIM returns one page: follow its cursor. Moving an entry to the dead letters "
        "is a copy and an acknowledgement that must happen together.",
        "XAUTOCLAIM from 0-0 until the cursor is 0-0; XPENDING tells each entry's delivery count; "
        "XADD to the dead stream and XACK in one MULTI/EXEC (or one script)."),
    "rate_limiting.check_fixed_window": (
        "Counting and setting the expiry are two writes: a crash between them leaves a counter that "
        "never expires, and the expiry must not move on every request.",
        "INCR and EXPIRE ... NX sent together in one MULTI/EXEC (or one script); compare the "
        "count INCR returned with the limit."),
    "rate_limiting.check_sliding_log": (
        "Checking the count and recording the request in separate round trips lets another app "
        "server fill the window in between: decide and record in one atomic step, and let the log expire.",
        "One Lua script: ZREMRANGEBYSCORE the old entries, ZCARD, ZADD a unique member when "
        "there is room, PEXPIRE the key; time comes in through ARGV."),
    "sessions.check_session_id": (
        "An id is as strong as its source: counters, clocks, process ids and seeded generators can "
        "be predicted or repeat; only the operating system's randomness cannot.",
        "The `secrets` module: token_urlsafe or token_hex with at least 16 random bytes."),
    "sessions.check_log_out_everywhere": (
        "The user's index lists their sessions: use it, not a scan of the keyspace, and remove only "
        "the ids you read, since another login may add one meanwhile.",
        "SMEMBERS the index, DEL the session keys in one command, SREM exactly those ids; count "
        "what DEL reports."),
    "sessions.check_sliding_read": (
        "Reading a session and restarting its timer are one operation: two round trips cost two "
        "network waits and can be split.",
        "GETEX key EX idle reads and restarts the TTL in one command; json.loads the result "
        "unless it is None."),
    "pipelines.check_bulk_load": (
        "Round trips, not commands, cost time; but one gigantic round trip buffers everything on "
        "both sides. Chunk it, without a transaction.",
        "pipeline(transaction=False), execute every 1,000 keys (or one MSET per 1,000 pairs); "
        "send nothing for an empty dict."),
    "pipelines.check_read_profiles": (
        "Queue every read and send them together: one round trip for any number of hashes.",
        "A pipeline of HGETALL per name, one execute(); an empty reply ({}) means the hash does "
        "not exist; no round trip for an empty list."),
    "transactions.check_deduct": (
        "Another app server may change the balance between your read and your write: detect it "
        "and try again, or do check and write in one atomic step. Never give up when it still fits.",
        "WATCH the balance on a pipeline, GET, MULTI, DECRBY + INCRBY, EXEC, retry on WatchError "
        "(a bounded number of times); or one Lua script that checks and writes."),
    "transactions.check_transfer": (
        "A transfer reads one balance and writes two: both writes or neither, and the read must "
        "still hold when they happen.",
        "`client.transaction(func, source)` runs WATCH/MULTI/EXEC with retries for you; or one Lua "
        "script with both keys in KEYS (one hash tag on a cluster)."),
    "cluster.check_transaction_keys": (
        "Keys used in one MULTI/EXEC on a cluster must share a slot, and only the hash tag decides "
        "it; a tag shared by every user makes one hot slot.",
        "Put `{user:<id>}` (the user's own tag) in each of the three names, after the prefix."),
    "cluster.check_key_slot": (
        "Only the part between the first `{` and the first `}` after it is hashed, when it is not "
        "empty; otherwise the whole key is.",
        "Find the first `{`, then the first `}` after it; CRC16 of those UTF-8 bytes (or of the whole "
        "key) modulo 16384."),
    "persistence.check_loss_budget": (
        "A process crash and a power loss are different: the kernel keeps what a killed process wrote, "
        "a machine that loses power keeps only what was fsynced. Pay for no more safety than the budget asks.",
        "appendonly yes, and appendfsync always for a budget of 0, everysec for about a second."),
    "persistence.check_confirmed_incr": (
        "A primary acknowledges a write before any replica has it; ask afterwards how many replicas "
        "have it, and never wait for ever for an answer.",
        "INCR, then WAIT 1 with a timeout in milliseconds (about 1000); True only if WAIT counted a replica."),
}

# Exercise id -> the reference solution's name in `course_lib.exercises.solutions.<topic>`.
SOLUTIONS: dict[str, str] = {
    "data_types.check_top_scores": "top_scores", "data_types.check_capped_log": "capped_log",
    "data_types.check_add_to_cart": "add_to_cart", "caching.check_negative_caching": "get_cached",
    "caching.check_prefix_invalidation": "invalidate_prefix", "caching.check_stampede_lock": "get_cached_once",
    "pubsub.check_room_message": "room_message", "pubsub.check_order_pattern": "order_pattern",
    "streams.check_ensure_group": "ensure_group", "streams.check_ack_after_processing": "ack_after_processing",
    "streams.check_claim_or_dead_letter": "claim_or_dead_letter",
    "rate_limiting.check_fixed_window": "fixed_window", "rate_limiting.check_sliding_log": "sliding_log",
    "sessions.check_session_id": "session_id", "sessions.check_log_out_everywhere": "log_out_everywhere",
    "sessions.check_sliding_read": "sliding_read", "pipelines.check_bulk_load": "bulk_load",
    "pipelines.check_read_profiles": "read_profiles", "transactions.check_deduct": "deduct",
    "transactions.check_transfer": "transfer", "cluster.check_transaction_keys": "transaction_keys",
    "cluster.check_key_slot": "slot_of", "persistence.check_loss_budget": "loss_budget",
    "persistence.check_confirmed_incr": "confirmed_incr",
}


def hint(checker: Callable, level: int = 1) -> None:
    """Print hint `level` (1: the idea, 2: the building blocks) for the exercise `checker` checks."""
    hints = HINTS[progress.exercise_id(checker)]
    if not 1 <= level <= len(hints):
        print(f"There are {len(hints)} hints (1 to {len(hints)}); then show_solution({checker.__name__}).")
        return
    print(f"Hint {level} of {len(hints)} for '{progress.title(checker)}': {hints[level - 1]}")


def solution(checker: Callable) -> Callable:
    """The reference solution of the exercise `checker` checks."""
    exercise = progress.exercise_id(checker)
    module = importlib.import_module(f"course_lib.exercises.solutions.{exercise.split('.')[0]}")
    return getattr(module, SOLUTIONS[exercise])


def show_solution(checker: Callable, confirm: bool = False):
    """The reference solution's source, once the exercise has passed, or with `confirm=True`; else a note."""
    from course_lib.notebook import show_source

    solved = progress.load().get(progress.exercise_id(checker), {}).get("solved", False)
    if not (solved or confirm):
        print(f"'{progress.title(checker)}' has not passed yet: try hint({checker.__name__}, 1) and "
              f"hint({checker.__name__}, 2) first, or show_solution({checker.__name__}, confirm=True) "
              "to see it anyway.")
        return None
    return show_source(solution(checker))
