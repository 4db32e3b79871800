"""What the course site adds to the committed notebooks, without editing them.

- The notebooks are copied into `docs/notebooks/` (git-ignored) when a build starts: Sphinx reads
  only files under its source folder, and a symlink would send relative links outside it.
- Each chapter page gets a "Code for this chapter" box after its title cell: its modules (API page and
  highlighted source), its experiments and exercise checkers, and its Lua scripts. The modules are the
  ones the README's course map lists for the chapter; the rest follow the naming rule
  `notebooks/NN_topic.ipynb` <-> `course_lib/{,experiments/,exercises/}topic.py`, `course_lib/lua/topic_*.lua`.
- The notebooks' links to `../README.md` (the course map) point at the site's home page instead.
- Generated API pages of modules that are gone are deleted before autosummary writes the current ones.
- The Lua page gets one section per script (`lua-<name>` is its label).
- Docstrings use Markdown-style lists (`- item` right under a sentence, as the source reads best);
  a blank line is put around each list so reStructuredText sees a list, not one run-on paragraph.
- Every widget output gets a note under the widget's static snapshot; a widget whose state the
  notebook did not save is replaced by the note alone (never an empty box).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from docutils import nodes

REPO = Path(__file__).resolve().parents[2]
COPIES = REPO / "docs" / "notebooks"
CHAPTER_DOC = re.compile(r"^notebooks/(\d\d)_(\w+)$")
WIDGET_VIEW = re.compile(r'^<script type="application/vnd\.jupyter\.widget-view\+json">(.*)</script>$', re.S)
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
README_LINK = re.compile(r"\]\(\.\./README\.md(#[^)]*)?\)")
COURSE_MAP_MARKER = "<!-- course_site puts the README's course map here, its links pointing at the chapter pages. -->"
LIST_ITEM = re.compile(r"^\s*(?:[-*]|\d+\.) ")
SNAPSHOT_NOTE = ("A snapshot of this widget as the notebook saved it: its controls do nothing on this page. "
                 "Run the notebook in JupyterLab (<code>make lab</code>) to use this widget.")
MISSING_NOTE = ("An interactive widget is shown here when the notebook runs. "
                "Run the notebook in JupyterLab (<code>make lab</code>) to use this widget.")


def chapters() -> dict[str, str]:
    """Chapter number -> topic, from the notebook file names."""
    return {path.name[:2]: path.stem[3:] for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))}


def copy_notebooks() -> None:
    """Make `docs/notebooks/` hold exactly the notebooks of `notebooks/` (only changed files are rewritten)."""
    COPIES.mkdir(exist_ok=True)
    originals = {path.name: path for path in (REPO / "notebooks").glob("*.ipynb")}
    for stale in COPIES.glob("*.ipynb"):
        if stale.name not in originals:
            stale.unlink(missing_ok=True)
    for name, path in originals.items():
        data, copy = path.read_bytes(), COPIES / name
        if not copy.exists() or copy.read_bytes() != data:
            partial = copy.with_suffix(f".{os.getpid()}.tmp")  # a concurrent build never reads half a file
            partial.write_bytes(data)
            partial.replace(copy)


def readme_section(heading: str) -> str:
    """The body of one `## ` section of the README (its links, relative to the repository, stay valid in docs/)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return readme.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0].strip() + "\n"


def drop_stale_api_pages() -> None:
    """Delete generated API pages (`docs/api/`) of modules that no longer exist: autodoc would fail on them."""
    for page in (REPO / "docs" / "api").glob("course_lib*.rst"):
        path = REPO / page.stem.replace(".", "/")
        if not (path.with_suffix(".py").exists() or (path / "__init__.py").exists()):
            page.unlink(missing_ok=True)


def course_map_modules() -> dict[str, list[str]]:
    """Chapter number -> the `course_lib` files the README's course map lists in its "code" column.

    A cell like `` `course_lib/runtime.py`, `connection.py` `` names files relative to the folder of the
    first one.
    """
    modules: dict[str, list[str]] = {}
    for row in readme_section("## Course map").splitlines():
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        if len(cells) < 4 or not re.fullmatch(r"\d\d", cells[0]):
            continue
        folder, files = "", []
        for name in re.findall(r"`([^`]+\.py)`", cells[3]):
            if "/" in name:
                folder = name.rsplit("/", 1)[0] + "/"
            files.append(name if "/" in name else folder + name)
        modules[cells[0]] = files
    return modules


def module_name(path: str) -> str:
    """`course_lib/experiments/caching.py` -> `course_lib.experiments.caching`."""
    return path.removesuffix(".py").replace("/", ".")


def lua_scripts(topic: str) -> list[str]:
    """The names of the Lua scripts of a chapter (`<topic>_*.lua`), sorted."""
    return sorted(path.stem for path in (REPO / "course_lib" / "lua").glob(f"{topic}_*.lua"))


def code_links(number: str, topic: str, listed: list[str]) -> str:
    """The MyST text of a chapter's "Code for this chapter" box (links relative to `notebooks/`)."""

    def module_item(path: str) -> str:
        name = module_name(path)
        source = f"../_modules/{name.replace('.', '/')}.html"
        return f'{{py:mod}}`{name}` (<a href="{source}">source</a>)'

    lines = []
    if listed:
        lines.append("- The patterns: " + ", ".join(module_item(path) for path in listed))
    for folder, what in (("experiments", "The measured experiments"), ("exercises", "The exercise checkers")):
        path = f"course_lib/{folder}/{topic}.py"
        if (REPO / path).exists():
            lines.append(f"- {what}: " + module_item(path))
    scripts = lua_scripts(topic)
    if scripts:
        lines.append("- Lua scripts: " + ", ".join(f"{{ref}}`{name} <lua-{name}>`" for name in scripts))
    if not lines:
        return ""
    body = "\n".join(lines)
    return f":::{{admonition}} Code for this chapter\n:class: seealso\n\n{body}\n:::\n"


def lua_page() -> str:
    """The sections the Lua page gets: per script, its label, the chapter using it and its file."""
    by_topic = {topic: number for number, topic in chapters().items()}
    sections = []
    for path in sorted((REPO / "course_lib" / "lua").glob("*.lua")):
        topic = next((t for t in sorted(by_topic, key=len, reverse=True) if path.stem.startswith(f"{t}_")), None)
        used = (f"Used in {{doc}}`notebooks/{by_topic[topic]}_{topic}`; loaded with "
                if topic else "Loaded with ")
        sections.append(f"(lua-{path.stem})=\n## {path.stem}\n\n{used}`register(client, \"{path.stem}\")`.\n\n"
                        f"```{{literalinclude}} ../course_lib/lua/{path.name}\n:language: lua\n```\n")
    return "\n" + "\n".join(sections)


def chapter_notebook(source: str, number: str, topic: str) -> str:
    """The notebook JSON with the code box after its first cell and README links sent to the home page."""
    notebook = json.loads(source)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["source"] = README_LINK.sub(lambda m: f"](../index.md{m.group(1) or ''})", text)
    box = code_links(number, topic, course_map_modules().get(number, []))
    if box:
        notebook["cells"].insert(1, {"cell_type": "markdown", "id": "course-site-code", "metadata": {}, "source": box})
    return json.dumps(notebook)


def widget_html(view_html: str, saved_models: set[str]) -> str | None:
    """The HTML for one widget output: the view script plus a note, or the note alone when its state is missing.

    Returns None when `view_html` is not a widget view (the raw node is left alone).
    """
    match = WIDGET_VIEW.match(view_html.strip())
    if not match:
        return None
    model_id = json.loads(match.group(1)).get("model_id")
    if model_id in saved_models:
        return f'<div class="course-widget">{view_html}</div>\n<p class="course-widget-note">{SNAPSHOT_NOTE}</p>'
    return f'<p class="course-widget-note">{MISSING_NOTE}</p>'


def saved_models(notebook_path: Path) -> set[str]:
    """The ids of the widget models whose state the notebook saved (`metadata.widgets`)."""
    metadata = json.loads(notebook_path.read_text(encoding="utf-8")).get("metadata", {})
    return set(metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {}))


def separate_lists(lines: list[str]) -> None:
    """Put a blank line before a Markdown-style list that follows a sentence, and after it ends (in place)."""
    item_indent = None  # indentation of the current list's items; None outside a list
    index = 0
    while index < len(lines):
        line = lines[index]
        indent = len(line) - len(line.lstrip())
        item = LIST_ITEM.match(line)
        if item_indent is None and item and index > 0 and lines[index - 1].strip() \
                and not LIST_ITEM.match(lines[index - 1]):
            lines.insert(index, "")
            index += 1
        if item:
            item_indent = indent if item_indent is None else item_indent
        elif item_indent is not None and line.strip() and indent <= item_indent:
            lines.insert(index, "")
            index += 1
            item_indent = None
        elif not line.strip():
            item_indent = None
        index += 1


def on_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    separate_lists(lines)


def on_source_read(app, docname: str, source: list[str]) -> None:
    match = CHAPTER_DOC.match(docname)
    if match:
        source[0] = chapter_notebook(source[0], *match.groups())
        app.env.note_dependency(str(REPO / "README.md"))
    elif docname == "index":
        source[0] = source[0].replace(COURSE_MAP_MARKER, readme_section("## Course map"))
        app.env.note_dependency(str(REPO / "README.md"))
    elif docname == "lua":
        source[0] += lua_page()


def on_doctree_read(app, doctree) -> None:
    if not CHAPTER_DOC.match(app.env.docname):
        return
    models = saved_models(Path(app.env.doc2path(app.env.docname)))
    for node in list(doctree.findall(nodes.raw)):
        html = widget_html(node.astext(), models) if "html" in node.get("format", "").split() else None
        if html is not None:
            node.replace_self(nodes.raw("", html, format="html"))


def setup(app):
    app.connect("config-inited", lambda app, config: (copy_notebooks(), drop_stale_api_pages()))
    app.connect("autodoc-process-docstring", on_docstring, priority=400)  # before napoleon (500)
    app.connect("source-read", on_source_read)
    app.connect("doctree-read", on_doctree_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
