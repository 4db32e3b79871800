"""The notebooks as a test suite: strict nbval must catch a changed output, and every notebook is
committed executed, mapped to its module and its tests."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine_agnostic  # bookkeeping of the committed notebooks; nbval itself runs them on every engine

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SANITIZE = REPO / "notebooks" / "sanitize.cfg"
# Notebook 00 teaches the foundation modules rather than one topic module.
TOPIC_MODULES = {"getting_started": ["runtime", "connection", "playground"]}


def _code_cells(path):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]


def test_nbval_fails_when_a_stored_output_changes(tmp_path):
    notebook = json.loads((REPO / "notebooks" / "00_getting_started.ipynb").read_text())
    changed = False
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            text = "".join(output.get("text", ""))
            if "mode: standalone" in text:
                output["text"] = text.replace("mode: standalone", "mode: cluster")
                changed = True
    assert changed, "notebook 00 no longer prints 'mode: standalone'; pick another stored output"
    copy = tmp_path / "00_changed.ipynb"
    copy.write_text(json.dumps(notebook))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
         f"--nbval-sanitize-with={SANITIZE}", str(copy)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1, result.stdout[-2000:]
    assert "1 failed" in result.stdout and "mode: cluster" in result.stdout


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_executed_in_order(path):
    counts = [cell["execution_count"] for cell in _code_cells(path)]
    assert None not in counts, "some code cells were never executed: run the notebook top to bottom"
    assert counts == list(range(counts[0], counts[0] + len(counts))), "re-run from a fresh kernel, top to bottom"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_maps_to_its_module_and_tests(path):
    topic = re.match(r"\d\d_(.+)\.ipynb", path.name).group(1)
    for module in TOPIC_MODULES.get(topic, [topic]):
        assert (REPO / "course_lib" / f"{module}.py").exists(), f"course_lib/{module}.py backs {path.name}"
        assert (REPO / "tests" / f"test_{module}.py").exists(), f"tests/test_{module}.py tests {path.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_run_all_reaches_the_end(path):
    # nbval executes every cell and fails on any exception a cell raises, unless the cell is marked as
    # raising on purpose. Forbidding the markers makes that run the "Run All with errors not allowed"
    # a learner does in JupyterLab: a lesson's error is caught and printed, never raised.
    for cell in _code_cells(path):
        source = "".join(cell["source"])
        assert "NBVAL_RAISES_EXCEPTION" not in source and "NBVAL_SKIP" not in source, \
            f"{path.name}: a cell raises on purpose or is skipped; catch and print the error instead:\n{source[:200]}"
        for output in cell["outputs"]:
            assert output["output_type"] != "error", f"{path.name}: stored {output['ename']}"
            if output.get("name") == "stderr":
                assert "NBVAL_IGNORE_OUTPUT" in source, f"stderr output in {path.name}: {''.join(output['text'])[:200]}"


def test_sanitize_file_pairs_every_regex_with_a_replacement():
    lines = [line for line in SANITIZE.read_text().splitlines() if line.strip() and not line.startswith(("#", "["))]
    assert lines and len(lines) % 2 == 0
    for regex, replace in zip(lines[::2], lines[1::2]):
        assert regex.startswith("regex: ") and replace.startswith("replace: "), (regex, replace)
        re.compile(regex[len("regex: "):])
