"""Sphinx configuration of the course site: `make docs` builds it into docs/_build/html.

The chapters are the committed notebooks exactly as nbval verified them (`docs/notebooks` is a
link to `../notebooks`): nothing is executed at build time. `_ext/course_site.py` adds what the
notebooks do not hold themselves: the home page's course map (taken from the README), each
chapter's "Code for this chapter" links, the Lua scripts page, and the widget notes.
"""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))  # autodoc imports course_lib from this checkout

project = "Redis in Practice"
author = "the Redis in Practice authors"
copyright = "the Redis in Practice authors (MIT licence)"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "course_site",
]

exclude_patterns = ["_build", "_static", "notebooks/.ipynb_checkpoints"]
# The docstrings are written for readers of the source: `x` means code there, so it means code here too.
default_role = "code"

# Notebooks: the stored outputs are the verified ones, so never re-execute.
nb_execution_mode = "off"
# ipywidgets' own static renderer (@jupyter-widgets/html-manager, vendored: no CDN at read time) draws
# each widget from the state the notebook saved; course_site adds the "run it in JupyterLab" note.
nb_ipywidgets_js = {"widgets/embed.js": {}}
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# API reference: one page per course_lib module, from its Google-style docstrings.
autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Attributes as fields of their class: autodoc already documents a NamedTuple's fields, and a second
# description of each would be a duplicate-object warning.
napoleon_use_ivar = True

html_theme = "furo"
html_title = "Redis in Practice"
html_static_path = ["_static"]
html_css_files = ["course.css"]
html_copy_source = False  # no raw copies of the pages' sources next to them: the chapters are the notebooks
