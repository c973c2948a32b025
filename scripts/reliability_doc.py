#!/usr/bin/env python
"""docs/reliability.md, generated from the tests.

Each test in tests/test_reliability.py and tests/test_security.py carries
`@pytest.mark.reliability(area=..., case=..., outcome=...)`; the table rows come from those
marks (read with `ast`, so nothing is imported). Cases that older test files already cover
are listed in `EXISTING` below with their test node ids; tests/test_reliability_doc.py checks
that those tests exist and that the doc is what this script writes.

    .venv/bin/python scripts/reliability_doc.py           # rewrite docs/reliability.md
    .venv/bin/python scripts/reliability_doc.py --check   # exit 1 when the doc is out of date
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"
MARKED_FILES = ("tests/test_reliability.py", "tests/test_security.py")
AREAS = {"fault": "Faults", "bad input": "Bad input", "security": "Security"}


@dataclass(frozen=True)
class Case:
    area: str
    case: str
    outcome: str
    tests: tuple[str, ...]  # pytest node ids, without parameters


# Cases covered by test files written before the reliability marks (their tests are not
# marked; the node ids are checked to exist).
EXISTING = [
    Case("fault", "The worker is killed (SIGKILL) during full fine-tuning, after round 1",
         "`turn resume` continues after the last completed round and ends with the same clean sets, clean "
         "probabilities and test accuracy as an uninterrupted run",
         ("tests/test_cli_runs.py::test_resume_after_a_kill_during_fine_tuning_matches_the_uninterrupted_run",)),
    Case("fault", "The user presses Stop on the Train page, then Resume",
         "The worker stops (state `stopped`), the page offers Resume, and Resume starts the worker again on the "
         "same run folder",
         ("tests/test_app_runs_dataset_train.py::test_train_page_stop_and_resume",)),
    Case("fault", "The disk is full when the Export page writes (rename fails with ENOSPC), or its folder is a file",
         "The page shows an error saying the previous file is unchanged; the previous export is byte-identical; "
         "no temporary file is left",
         ("tests/test_app_audit_pages.py::test_export_failure_keeps_the_previous_file",
          "tests/test_app_audit_pages.py::test_export_to_an_unusable_folder_shows_an_error")),
    Case("fault", "Undo in one tab while another tab reviews the same run",
         "Undo reverts only this tab's last decision; the other tab's decision stands",
         ("tests/test_app_audit_pages.py::test_review_actions_are_recorded_at_once",)),
    Case("bad input", "Images that are truncated, empty (zero bytes), not images, cut-short JPEGs, stray files, "
                      "images outside a class folder",
         "Skipped with a reason per file (`truncated`, `empty file`, `not an image`, ...), listed on the Dataset "
         "page; the rest loads",
         ("tests/test_datasets.py::test_check_image_file_reasons",
          "tests/test_datasets.py::test_folder_bad_files_skipped")),
    Case("bad input", "Grey, grey+alpha, RGBA, palette with transparency, 1-bit, CMYK, 16-bit, BMP/GIF/WebP/TIFF "
                      "images",
         "All load as RGB of the right size; 16-bit images are rescaled, not clipped",
         ("tests/test_datasets.py::test_image_modes_load_as_rgb",)),
    Case("bad input", "Manifests with a BOM, semicolons or tabs, quoted commas, unicode and leading spaces in "
                      "paths, blank rows, UTF-16, no header, Windows separators",
         "Read correctly; blank rows counted; an unquoted delimiter in a path skips that row with `quote fields`",
         ("tests/test_datasets.py::test_manifest_bom_semicolons_quotes_unicode",
          "tests/test_datasets.py::test_manifest_variants",
          "tests/test_datasets.py::test_manifest_unquoted_delimiter_row")),
    Case("bad input", "Manifest rows with missing files, unknown labels, `../../secret`, absolute paths or symlinks "
                      "leading out of the data root; symlinked folders out of the root",
         "Each row skipped with its reason (`file not found`, `not one of the N classes`, `outside the data root`); "
         "nothing outside the root is read",
         ("tests/test_datasets.py::test_manifest_missing_unknown_outside",
          "tests/test_datasets.py::test_resolve_inside",
          "tests/test_datasets.py::test_folder_symlinked_dir_out_of_root")),
    Case("bad input", "Duplicate sample ids or paths; a single class; an empty manifest; no usable row; a wrong "
                      "header; an empty or missing folder",
         "DatasetError naming the duplicates or saying what is missing (`at least two classes`, `no usable rows`, "
         "`header row`, `no such folder`)",
         ("tests/test_datasets.py::test_manifest_duplicates_named",
          "tests/test_datasets.py::test_manifest_single_class_and_empty",
          "tests/test_datasets.py::test_manifest_all_rows_bad", "tests/test_datasets.py::test_folder_errors")),
    Case("bad input", "Any valid manifest (random names, labels, splits, delimiters, BOM; hypothesis)",
         "Loads back with the same paths, labels and splits",
         ("tests/test_datasets.py::test_manifest_round_trip_property",)),
    Case("bad input", "A truncated IDX file; unknown dataset kinds and spec keys; bad noise settings",
         "DatasetError with the reason (`truncated`, `unknown dataset kind`, `unknown key`, ...)",
         ("tests/test_datasets.py::test_idx_truncated", "tests/test_datasets.py::test_arrays_and_spec_validation",
          "tests/test_datasets.py::test_noise_rejects_bad_input")),
    Case("bad input", "An invalid folder on the Dataset page",
         "An error on the page; the previously chosen dataset stays chosen",
         ("tests/test_app_runs_dataset_train.py::test_dataset_page_invalid_folder_shows_an_error",)),
    Case("bad input", "Model names and folders that do not exist, unsupported Hugging Face model types, a hub that "
                      "cannot be reached, checkpoints that are missing or do not fit",
         "ModelError with a hint, within 10 s (no network retries)",
         ("tests/test_models.py::test_timm_unknown_name", "tests/test_models.py::test_hf_missing_hub_id_fails_fast",
          "tests/test_models.py::test_hf_hub_unreachable_fails_fast",
          "tests/test_models.py::test_timm_pretrained_weights_unreachable_fails_fast",
          "tests/test_models.py::test_hf_unsupported_model_type", "tests/test_models.py::test_hf_folder_without_config",
          "tests/test_models.py::test_timm_checkpoint_errors")),
    Case("bad input", "`turn run --data` a missing path, `turn resume` of a folder that is not a run, an unknown "
                      "`--method`",
         "`turn: error: ...` (exit 1) or argparse's usage message (exit 2), never a traceback",
         ("tests/test_cli_runs.py::test_cli_errors_are_messages_not_tracebacks",)),
    Case("bad input", "NaN or infinite losses, a class with one or zero samples, a class whose losses are all equal, "
                      "a class with no clean candidate above tau",
         "Finite clean probabilities; such classes are kept whole or fall back to their floor (the 5% most probably "
         "clean), each reported in the run's notes",
         ("tests/test_algorithm.py::test_gmm_edge_cases_are_reported_not_crashes",
          "tests/test_algorithm.py::test_sanitize_losses_counts_and_fills",
          "tests/test_algorithm.py::test_selection_with_a_class_without_clean_candidate_falls_back_to_the_floor",
          "tests/test_algorithm.py::test_selection_ignores_classes_without_samples_and_is_seeded")),
    Case("security", "A CIFAR python-version file whose pickle runs a shell command",
         "Refused (`refusing os.system`); only numpy array constructors are unpickled; the command never runs",
         ("tests/test_datasets.py::test_cifar_refuses_malicious_pickle",)),
]


def _is_reliability(dec: ast.expr) -> bool:
    if not isinstance(dec, ast.Call):
        return False
    f = dec.func
    return (isinstance(f, ast.Name) and f.id == "reliability") or (
        isinstance(f, ast.Attribute) and f.attr == "reliability")


def _const(node: ast.expr, where: str) -> str:
    try:
        value = ast.literal_eval(node)
    except ValueError as exc:
        raise ValueError(f"{where}: reliability mark arguments must be literal strings") from exc
    if not isinstance(value, str):
        raise ValueError(f"{where}: reliability mark arguments must be strings")
    return value


def marked_cases(repo: Path = REPO, files=MARKED_FILES) -> list[Case]:
    """One Case per `@reliability(area=, case=, outcome=)` mark, in file order."""
    cases = []
    for rel in files:
        tree = ast.parse((repo / rel).read_text(encoding="utf-8"), rel)
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef):
                continue
            for dec in node.decorator_list:
                if not _is_reliability(dec):
                    continue
                where = f"{rel}::{node.name}"
                args = {k.arg: _const(k.value, where) for k in dec.keywords}
                if dec.args or set(args) != {"area", "case", "outcome"}:
                    raise ValueError(f"{where}: use reliability(area=..., case=..., outcome=...)")
                if args["area"] not in AREAS:
                    raise ValueError(f"{where}: area must be one of {list(AREAS)}")
                cases.append(Case(args["area"], args["case"], args["outcome"], (where,)))
    return cases


def all_cases(repo: Path = REPO) -> list[Case]:
    return marked_cases(repo) + EXISTING


def node_exists(nodeid: str, repo: Path = REPO) -> bool:
    """Whether `file::test` (or `file::Class::test`) names a test function in that file."""
    rel, *names = nodeid.split("::")
    path = repo / rel
    if not path.is_file() or not names:
        return False
    scope = ast.parse(path.read_text(encoding="utf-8")).body
    for name in names:
        found = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name), None)
        if found is None:
            return False
        scope = found.body
    return isinstance(found, ast.FunctionDef) and found.name.startswith("test")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


HEADER = """\
# Reliability: never lose work, never crash on bad input

Every case below is checked by the test named beside it. The outcome is what the test asserts,
not what we hope for. The tables are generated from the tests: each test in
`tests/test_reliability.py` and `tests/test_security.py` carries
`@pytest.mark.reliability(area=..., case=..., outcome=...)`, and cases that older test files
already covered are listed (with their test ids) in `scripts/reliability_doc.py`.
`tests/test_reliability_doc.py` fails when this file and the tests disagree; rewrite it with

    .venv/bin/python scripts/reliability_doc.py

Run these checks alone with `.venv/bin/python -m pytest -m reliability` (the marked tests;
about 2.5 minutes on 2 busy CPU cores, most of it the kill-and-resume run and the real
Streamlit servers) or `-m "reliability and not slow and not browser"` for the quick ones.

What holds everywhere:

- Work is written the moment it exists: review decisions go to SQLite (WAL, synchronous=FULL)
  per click; run stages, features and exports are written to a temporary file and renamed, so
  a kill leaves the previous version or the new one, never half a file.
- A killed run is shown as interrupted and `turn resume` continues from its last completed
  stage with the same result as an uninterrupted run.
- Bad input ends in a message that says what to change (`turn: error: ...`, an error box in the
  app, `failed` with the reason in the run's status), never a traceback half-way.
- Nothing runs code from a file or a hub: weights are read with `weights_only=True` or from
  safetensors, `trust_remote_code` is off, CIFAR pickles go through an allow-list unpickler.
  The app listens on localhost only, uploads are size-limited, exported CSV cells cannot run
  as spreadsheet formulas.
"""


def render(cases: list[Case]) -> str:
    parts = [HEADER]
    for area, title in AREAS.items():
        rows = [c for c in cases if c.area == area]
        parts.append(f"\n## {title}\n\n| Case | Outcome | Test |\n|---|---|---|\n")
        for c in rows:
            tests = "<br>".join(f"`{t}`" for t in c.tests)
            parts.append(f"| {_cell(c.case)} | {_cell(c.outcome)} | {tests} |\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the doc is up to date")
    args = parser.parse_args(argv)
    text = render(all_cases())
    missing = [t for c in all_cases() for t in c.tests if not node_exists(t)]
    if missing:
        print("tests named in the doc that do not exist:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    if args.check:
        if not DOC.exists() or DOC.read_text(encoding="utf-8") != text:
            print(f"{DOC.relative_to(REPO)} is out of date: run scripts/reliability_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC.relative_to(REPO)} ({len(all_cases())} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
