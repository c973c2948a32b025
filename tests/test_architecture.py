"""The shape of the code (static checks, no imports of the project's modules but runfolder):

- no import cycle in `turn_backend`, counting the imports inside functions (an import there
  may defer a heavy library, never hide a cycle); imports under `if TYPE_CHECKING:` are
  annotations only, they never run, and are not counted;
- `RunFolder` is the only code that spells a file name of the run folder.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from turn_backend.runfolder import RunFolder

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------- import graph


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports (at module level or in a function)."""
    files = {_module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        skip = _type_checking_nodes(tree)
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's package
                    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                names = [source] + [f"{source}.{alias.name}" for alias in node.names]  # a name may be a module
            else:
                continue
            for name in names:
                if name == package or name.startswith(package + "."):
                    target = resolve(name)
                    if target and target != module:
                        targets.add(target)
        graph[module] = targets
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    out.append(sorted(component))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    return [c for c in strongly_connected(graph) if len(c) > 1]


def test_turn_backend_has_no_import_cycle():
    graph = import_graph(ROOT, "turn_backend")
    assert len(graph) > 50  # the package was found
    found = cycles(graph)
    detail = "\n".join(
        f"- {', '.join(c)}\n" + "\n".join(f"    {m} -> {', '.join(sorted(graph[m] & set(c)))}" for m in c)
        for c in found)
    assert not found, f"import cycles in turn_backend (imports inside functions count):\n{detail}"


def test_the_cycle_check_sees_imports_inside_functions_and_skips_type_checking(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (pkg / "c.py").write_text("import pkg.a as a\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.e import E\n")
    (pkg / "e.py").write_text("from pkg import d\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg", "pkg.c"}
    assert graph["pkg.d"] == set()
    assert cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


# ------------------------------------------------------------------------ run-folder file names

# every file name RunFolder defines (its upper-case constants): derived, so it cannot drift
RUN_FILE_NAMES = sorted({v for k, v in vars(RunFolder).items() if k.isupper() and isinstance(v, str) and "." in v})
SCANNED = ("turn_backend", "app", "pages", "scripts")
OWNER = "turn_backend/runfolder.py"
# (file, name): why that file may spell it
ALLOWED = {
    ("turn_backend/models/hf_models.py", "config.json"): "a Hugging Face model folder's config, not a run's",
    ("turn_backend/models/registry.py", "config.json"): "a Hugging Face model folder's config, not a run's",
    ("app/training.py", "config.json"): "a Hugging Face model folder's config, not a run's",
}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def spelled_run_file_names(path: Path) -> list[tuple[int, str]]:
    """(line, name) for each string in the code of `path` (docstrings aside) that is a
    run-folder file name or a path ending in one."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    docs = _docstrings(tree)
    patterns = {name: re.compile(rf"(^|[/\\]){re.escape(name)}$") for name in RUN_FILE_NAMES}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            found += [(node.lineno, name) for name, pattern in patterns.items() if pattern.search(node.value)]
    return found


def test_run_file_names_are_derived_from_runfolder():
    assert {"config.json", "events.jsonl", "classes.json", "history.json", "metrics.json", "choice.json",
            "signals.parquet", "noise_matrix.json"} <= set(RUN_FILE_NAMES)


def test_only_runfolder_spells_the_run_folders_file_names():
    offences, used = [], set()
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == OWNER:
                continue
            for line, name in spelled_run_file_names(path):
                if (rel, name) in ALLOWED:
                    used.add((rel, name))
                else:
                    offences.append(f"{rel}:{line}: {name!r}")
    assert not offences, ("run-folder file names outside RunFolder (use its accessors or constants):\n"
                          + "\n".join(offences))
    assert used == set(ALLOWED), f"allowed but no longer spelled (remove from ALLOWED): {set(ALLOWED) - used}"


@pytest.mark.parametrize("text, hit", [('x = "classes.json"', True), ('x = f"{d}/classes.json"', True),
                                       ('x = "no config.json here"', False), ('"""classes.json"""', False)])
def test_the_name_check_reads_strings_not_prose(tmp_path, text, hit):
    path = tmp_path / "m.py"
    path.write_text(text + "\n")
    assert bool(spelled_run_file_names(path)) == hit

