"""The display helpers every notebook uses: sources shown as they are tested (methods dedented), Lua scripts
shown whole, verdict lines printed as `<claim>: True|False`."""

import pytest

from course_lib import lua
from course_lib.notebook import show_lua, show_source, verdict

pytestmark = pytest.mark.engine_agnostic


class Example:
    def method(self):
        return 1


def test_show_source_dedents_a_method_so_it_reads_like_a_function():
    assert show_source(Example.method).data == "```python\ndef method(self):\n    return 1\n```"


def test_show_lua_shows_each_script_whole_with_its_contract():
    shown = show_lua("caching_release_lock", "sessions_get").data
    assert shown == ("```lua\n" + lua.source("caching_release_lock") + "```\n```lua\n" + lua.source("sessions_get") + "```")
    assert "-- KEYS[1]" in shown


def test_verdict_prints_one_comparable_line(capsys):
    assert verdict("cache hit at least 10x faster", 3 > 2) is None
    verdict("never", 0)
    assert capsys.readouterr().out == "cache hit at least 10x faster: True\nnever: False\n"
