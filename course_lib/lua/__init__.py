"""The course's Lua scripts: one file per script in this folder, named `<topic>_<operation>.lua`.

Each file opens with its contract as comments: `-- KEYS[i]`, `-- ARGV[i]` (or `-- ARGV: none`)
and `-- returns` lines. Every key arrives through KEYS (cluster-safe), time through ARGV (so tests
can fix it). The files are package data read with `importlib.resources`, so the same code works
from a checkout and from an installed wheel.
"""

from __future__ import annotations

import functools
from importlib import resources

from redis.commands.core import Script


@functools.cache
def source(name: str) -> str:
    """The text of `course_lib/lua/<name>.lua`, e.g. `source("sessions_get")`; also what a notebook shows."""
    return resources.files(__name__).joinpath(f"{name}.lua").read_text()


def register(client, name: str) -> Script:
    """`client.register_script` of `course_lib/lua/<name>.lua`; call the result with `keys=` and `args=`.

    Registering sends nothing: each call is an EVALSHA, and redis-py loads the script (SCRIPT LOAD)
    the first time a server answers that it does not know it.
    """
    return client.register_script(source(name))
