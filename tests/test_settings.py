"""The environment settings are named in course_lib/settings.py only: one name each, and no other module
spells a COURSE_ setting itself (so no two modules import each other just to agree on a name)."""

import re
from pathlib import Path

import pytest

from course_lib import settings

pytestmark = pytest.mark.engine_agnostic
PACKAGE = Path(settings.__file__).parent


def test_each_setting_is_named_once():
    names = {name: value for name, value in vars(settings).items() if name.endswith("_SETTING")}
    assert len(set(names.values())) == len(names) >= 8
    assert all(re.fullmatch(r"COURSE_[A-Z_]+", value) for value in names.values())


def test_no_other_module_spells_a_setting():
    spelled = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
               if path.name != "settings.py" and re.search(r"""_SETTING = ["']COURSE_""", path.read_text())}
    assert spelled == set()
