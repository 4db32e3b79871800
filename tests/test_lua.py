"""course_lib.lua: every script opens with its contract, and `register` gives a script that runs."""

import re
from importlib import resources

import pytest

from course_lib import lua
from course_lib.keys import key

SCRIPTS = sorted(entry.name.removesuffix(".lua") for entry in resources.files(lua).iterdir()
                 if entry.name.endswith(".lua"))
# COURSE_DESIGN.md: KEYS[i] lines, then ARGV[i] lines (`ARGV[3..]` for a variable tail, `ARGV: none`), then returns
CONTRACT = re.compile(r"(-- KEYS\[\d+\]: .+\n)+(-- ARGV(\[\d+\]|\[\d+\.\.\]|: none).*\n)+-- returns: .+\n")
# a FUNCTION LOAD library must start with its shebang; the contract follows it, its functions take (KEYS, ARGV)
SHEBANG = re.compile(r"#!lua name=\w+\n")


def test_the_scripts_are_found():
    assert "caching_release_lock" in SCRIPTS and "sessions_get" in SCRIPTS and len(SCRIPTS) >= 8


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_opens_with_keys_argv_and_returns_lines(name):
    text = lua.source(name)
    shebang = SHEBANG.match(text)
    contract = CONTRACT.match(text, shebang.end() if shebang else 0)
    assert contract, f"{name}.lua must open with `-- KEYS[i]: ...`, `-- ARGV[i]: ...` and `-- returns: ...` lines"
    documented = set(re.findall(r"^-- (KEYS|ARGV)\[(\d+)", contract.group(), re.MULTILINE))
    used = set(re.findall(r"\b(KEYS|ARGV)\[(\d+)\]", text[contract.end():]))
    assert used <= documented, f"{name}.lua uses {sorted(used - documented)} without documenting them"


def test_source_is_the_file_text():
    assert lua.source("caching_release_lock").startswith("-- KEYS[1]: the lock key")
    with pytest.raises(FileNotFoundError):
        lua.source("no_such_script")


def test_register_gives_a_script_that_runs(r):
    lock = key("lua", "lock")
    r.set(lock, "mine")
    release = lua.register(r, "caching_release_lock")
    assert release(keys=[lock], args=["someone else's"]) == 0 and r.get(lock) == "mine"
    assert release(keys=[lock], args=["mine"]) == 1 and not r.exists(lock)
