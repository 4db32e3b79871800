"""Small display helpers every notebook uses: show the real source of a pattern or a Lua script, print a verdict.

Kept separate from the patterns so `course_lib.<topic>` stays importable without Jupyter.
"""

from __future__ import annotations

import inspect
import textwrap


def show_source(*objects):
    """The tested source of functions/classes/methods as an IPython Markdown code block (never a pasted copy).

    A method's source is dedented, so it reads like a function.
    """
    from IPython.display import Markdown

    blocks = [textwrap.dedent(inspect.getsource(obj)).rstrip() for obj in objects]
    return Markdown("```python\n" + "\n\n\n".join(blocks) + "\n```")


def show_lua(*names: str):
    """The course's Lua scripts `course_lib/lua/<name>.lua` as IPython Markdown code blocks, contract comments included."""
    from IPython.display import Markdown

    from course_lib import lua

    return Markdown("\n".join(f"```lua\n{lua.source(name)}```" for name in names))


def verdict(claim: str, holds: bool) -> None:
    """Print a measured claim and whether it held, as one line nbval compares: `<claim>: True`.

    Returns nothing, so a verdict on a cell's last line adds no stray `True` output.
    """
    print(f"{claim}: {bool(holds)}")
