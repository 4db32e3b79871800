"""Start a chapter again: its notebook back to the committed state, the learner's copy kept beside it.

`python -m course_lib reset 05` renames `notebooks/05_rate_limiting.ipynb` to
`notebooks/mine-05_rate_limiting-<date-time>.ipynb` and writes the committed version (from git, the
repository's own history) in its place. The suite ignores `mine-*` notebooks and git does too.
"""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class ResetError(RuntimeError):
    """The chapter could not be reset; the message says why and what to do."""


def notebook(number: str, repo: Path = REPO) -> Path:
    """The notebook of chapter `number` ("05" or "5")."""
    if not number.isdigit():
        raise ResetError(f"a chapter is a number such as 05, got {number!r}")
    found = sorted((repo / "notebooks").glob(f"{int(number):02d}_*.ipynb"))
    if not found:
        chapters = ", ".join(path.name[:2] for path in sorted((repo / "notebooks").glob("[0-9][0-9]_*.ipynb")))
        raise ResetError(f"there is no chapter {number}; the chapters are {chapters}")
    return found[0]


def committed(path: Path, repo: Path = REPO) -> bytes:
    """The notebook as committed in the repository's git history (HEAD)."""
    relative = path.relative_to(repo).as_posix()
    try:
        shown = subprocess.run(["git", "show", f"HEAD:{relative}"], cwd=repo, capture_output=True, timeout=30)
    except FileNotFoundError:
        raise ResetError("resetting needs git (the course's committed notebooks live in its history); "
                         "install git, or download the notebook again") from None
    if shown.returncode:
        raise ResetError(f"git could not show the committed {relative}: {shown.stderr.decode().strip()}")
    return shown.stdout


def reset(number: str, repo: Path = REPO, now: datetime | None = None) -> tuple[Path, Path | None]:
    """Restore chapter `number`'s notebook; returns (the notebook, the learner's saved copy or None if unchanged)."""
    path = notebook(number, repo)
    original = committed(path, repo)
    if path.read_bytes() == original:
        return path, None
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    copy = path.with_name(f"mine-{path.stem}-{stamp}.ipynb")
    if copy.exists():
        raise ResetError(f"{copy.name} already exists; wait a second and reset again")
    path.rename(copy)
    path.write_bytes(original)
    return path, copy
