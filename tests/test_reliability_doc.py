"""docs/reliability.md and the tests agree: every case in the doc names tests that exist, every
test marked `@pytest.mark.reliability` is in the doc, and the doc is exactly what
scripts/reliability_doc.py generates from the marks."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Tests in the marked files that check the checkers rather than a case.
UNMARKED_OK = {"tests/test_security.py::test_unsafe_loading_checker_finds_each_pattern"}


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("reliability_doc", REPO / "scripts" / "reliability_doc.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def doc_rows() -> list[tuple[str, str, str, list[str]]]:
    """(section, case, outcome, test ids) for every table row of docs/reliability.md."""
    rows, section = [], None
    for line in (REPO / "docs" / "reliability.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("| ") and not line.startswith("| Case |"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            assert len(cells) == 3, line
            rows.append((section, cells[0], cells[1], re.findall(r"`([^`]+::[^`]+)`", cells[2])))
    return rows


def test_every_case_in_the_doc_names_existing_tests(gen):
    rows = doc_rows()
    assert len(rows) >= 30
    for section, case, outcome, tests in rows:
        assert section in gen.AREAS.values(), section
        assert case and outcome and tests, case
        for nodeid in tests:
            assert gen.node_exists(nodeid), f"the doc names {nodeid}, which is not a test"


def test_every_marked_test_is_in_the_doc(gen):
    marked = gen.marked_cases()
    assert len(marked) >= 15
    in_doc = {(case, outcome, t) for _, case, outcome, tests in doc_rows() for t in tests}
    for c in marked:
        assert (c.case, c.outcome, c.tests[0]) in in_doc, f"{c.tests[0]} ({c.case}) is missing from the doc"
    areas = {gen.AREAS[c.area] for c in marked}
    assert areas == set(gen.AREAS.values())


def test_every_test_in_the_reliability_files_is_marked(gen):
    marked = {c.tests[0] for c in gen.marked_cases()}
    for rel in gen.MARKED_FILES:
        tree = ast.parse((REPO / rel).read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                nodeid = f"{rel}::{node.name}"
                assert nodeid in marked or nodeid in UNMARKED_OK, f"{nodeid} has no reliability mark"


def test_marks_read_from_the_source_are_the_marks_pytest_applies(gen):
    """The AST reading of the marks agrees with the marks on the imported test functions."""
    sys.path.insert(0, str(REPO / "tests"))
    for c in gen.marked_cases():
        rel, name = c.tests[0].split("::")
        module = importlib.import_module(Path(rel).stem)
        marks = [m for m in getattr(getattr(module, name), "pytestmark", []) if m.name == "reliability"]
        assert [(m.kwargs["area"], m.kwargs["case"], m.kwargs["outcome"]) for m in marks] == \
               [(c.area, c.case, c.outcome)], c.tests[0]


def test_the_doc_is_up_to_date(gen):
    expected = gen.render(gen.all_cases())
    actual = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/reliability.md is out of date: run .venv/bin/python scripts/reliability_doc.py"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "reliability_doc.py"), "--check"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_a_case_without_a_test_is_caught(gen, tmp_path):
    """The checks fail for a doc row whose test does not exist and for a malformed mark."""
    assert not gen.node_exists("tests/test_reliability.py::test_that_does_not_exist")
    assert not gen.node_exists("tests/no_such_file.py::test_x")
    bad = tmp_path / "tests" / "test_bad.py"
    bad.parent.mkdir()
    bad.write_text("import pytest\n@pytest.mark.reliability('fault', 'no keywords')\ndef test_x():\n    pass\n")
    with pytest.raises(ValueError, match="reliability\\(area=..., case=..., outcome=...\\)"):
        gen.marked_cases(tmp_path, ("tests/test_bad.py",))
    bad.write_text("import pytest\n@pytest.mark.reliability(area='weather', case='c', outcome='o')\n"
                   "def test_x():\n    pass\n")
    with pytest.raises(ValueError, match="area must be one of"):
        gen.marked_cases(tmp_path, ("tests/test_bad.py",))
