"""Small display helpers every notebook uses: show the real source of a pattern, print a verdict.

Kept separate from the patterns so `course_lib.<topic>` stays importable without Jupyter.
"""

from __future__ import annotations

import inspect


def show_source(*objects):
    """The tested source of functions/classes as an IPython Markdown code block (never a pasted copy)."""
    from IPython.display import Markdown

    blocks = [inspect.getsource(obj).rstrip() for obj in objects]
    return Markdown("```python\n" + "\n\n\n".join(blocks) + "\n```")


def verdict(claim: str, holds: bool) -> None:
    """Print a measured claim and whether it held, as one line nbval compares: `<claim>: True`.

    Returns nothing, so a verdict on a cell's last line adds no stray `True` output.
    """
    print(f"{claim}: {bool(holds)}")
