"""Every `turn` command of the README, as typed, from a working directory that is not the
repository, with the README's relative paths, on tiny data.

The README's commands are read from README.md itself, so a command added there fails
`test_every_readme_command_is_covered` until it is given its tiny settings here. Options
appended to a command only shrink it (argparse: a later option wins, e.g. `--device cpu`
after `--device cuda` on a machine without a GPU); the paths stay the README's.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.annotators import write_annotated_manifest
from helpers.cli import REPO, turn, write_image_folder
from turn_backend.review import ReviewStore
from turn_backend.runfolder import RunFolder

TINY_RUN = ["--image-size", "32", "--batch-size", "32", "--lp-epochs", "2", "--fft-epochs", "1", "--quiet"]
TINY_DEMO = ["--n-train", "100", "--n-test", "50"]

# README command (after `.venv/bin/turn`) -> what it needs to run in seconds, in README order.
# None: the command is exercised through --help only (a benchmark runs for minutes to hours).
COMMANDS: dict[str, list[str] | None] = {
    "demo --out runs/demo": [*TINY_DEMO, "--image-size", "32", "--methods", "lp-gce", "--device", "cpu", "--quiet"],
    "estimate --data path/to/folder": [*TINY_RUN, "--device", "cpu"],
    "run --data path/to/folder --model efficientnet_lite0 --out runs/mine": [*TINY_RUN, "--device", "cpu"],
    "run --data path/to/folder --method scan --out runs/scan": [*TINY_RUN, "--device", "cpu"],
    "finetune runs/scan --out runs/scan-tuned": ["--fft-epochs", "1", "--batch-size", "32", "--device", "cpu",
                                                 "--quiet"],
    "run --data labels.csv --root images/ --method turn --device cuda": [*TINY_RUN, "--device", "cpu"],
    "run --data demo --processes 2 --device cpu": [*TINY_DEMO, *TINY_RUN, "--out", "runs/two"],
    "status runs/mine": [],
    "resume runs/mine": ["--quiet"],
    "export runs/mine --out cleaned.csv": [],
    "export runs/mine --out cleaned/ --format imagefolder": [],
    "export runs/mine --out to-label --format label-studio": [],
    "export runs/mine --out to-check --format label-studio --spot-check 100": [],
    "import-labels runs/mine project-export.json": [],
    "retrain runs/mine --out runs/mine-2": ["--lp-epochs", "2", "--fft-epochs", "1", "--device", "cpu", "--quiet"],
    "retrain runs/mine --out runs/mine-3 --ambiguous keep": ["--lp-epochs", "2", "--fft-epochs", "1", "--device",
                                                            "cpu", "--quiet"],
    "export runs/mine --format features --out features.npy": [],
    "run --data path/to/folder --features features.npy --out runs/own": [*TINY_RUN, "--device", "cpu"],
    "run --data path/to/folder --features features.npy --pred-probs probs.npy --out runs/own-probs": [
        *TINY_RUN, "--device", "cpu"],
    "methods": [],
    "bench --quick": None,
    "bench --scale": None,
    "bench --scale --n 1000000": None,
    "bench --detection": None,
    "bench --annotators": None,
    "run --data crowd/labels.csv --out runs/crowd": [*TINY_RUN, "--device", "cpu"],
    "export runs/crowd --out crowd.csv": [],
    "export runs/crowd --format annotators --out annotators.csv": [],
    "bench --photos": None,
    "bench --throughput": None,
}


# A Label Studio "JSON" export of runs/mine's images (sample ids: paths in the class folders).
LABEL_STUDIO_EXPORT = [
    {"id": 1, "data": {"sample_id": "cat/000.png"}, "annotations": [
        {"id": 1, "result": [{"from_name": "label", "type": "choices", "value": {"choices": ["dog"]}}]}]},
    {"id": 2, "data": {"sample_id": "cat/001.png"}, "annotations": [
        {"id": 2, "result": [{"from_name": "label", "type": "choices", "value": {"choices": ["Ambiguous"]}}]}]},
]


def readme_commands() -> list[str]:
    """The `turn` commands in the README's bash blocks, without `.venv/bin/turn` and comments."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith(".venv/bin/turn "):
                commands.append(" ".join(shlex.split(line)[1:]))
    return commands


def test_every_readme_command_is_covered():
    listed = readme_commands()
    assert listed, "the README shows no `.venv/bin/turn` command"
    missing = set(listed) - set(COMMANDS)
    assert not missing, f"give these README commands their tiny settings: {missing}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A working directory outside the repository holding the README's inputs: the folder
    path/to/folder (one subfolder per class) and the manifest labels.csv with images/."""
    cwd = tmp_path_factory.mktemp("user-cwd")
    assert not cwd.resolve().is_relative_to(REPO.resolve())
    write_image_folder(cwd / "path" / "to" / "folder", per_class=24)
    rows = write_image_folder(cwd / "images", per_class=24, seed=1)
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(cwd / "labels.csv", index=False)
    # a classifier's class probabilities for the 48 images of path/to/folder ("Your own embeddings")
    np.save(cwd / "probs.npy", np.random.default_rng(0).dirichlet(np.ones(2), size=48))
    write_annotated_manifest(cwd / "crowd", n_train=40, n_test=10)
    (cwd / "project-export.json").write_text(json.dumps(LABEL_STUDIO_EXPORT))
    return cwd


def run_readme(command: str, cwd: Path, cache: Path):
    extra = COMMANDS[command]
    args = [*shlex.split(command), *(["--help"] if extra is None else extra)]
    result = turn(*args, cwd=cwd, cache=cache, timeout=900)
    assert result.returncode == 0, f"turn {command}\n{result.stdout}\n{result.stderr}"
    return result


def test_a_relative_run_folder_and_data_path(workdir, tmp_path):
    """The bug of issue 19: relative --data and --out, from somewhere else than the repository."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    (cwd / "data").symlink_to(workdir / "path" / "to" / "folder")
    result = turn("run", "--data", "data", "--out", "out/run", "--method", "lp-gce", *TINY_RUN, "--device", "cpu",
                  "--projections", cwd=cwd, cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    folder = RunFolder(cwd / "out" / "run")
    assert folder.status()["state"] == "done"
    assert folder.config()["dataset"]["path"] == str(cwd / "data")  # absolute in the run's config
    assert f"run folder: {cwd / 'out' / 'run'}" in result.stdout


def test_a_missing_relative_path_says_what_was_tried(tmp_path):
    result = turn("run", "--data", "nowhere/photos", "--quiet", cwd=tmp_path, cache=tmp_path / "cache")
    assert result.returncode == 1
    assert str(tmp_path / "nowhere" / "photos") in result.stderr and "no such file or folder" in result.stderr


@pytest.mark.slow
def test_every_readme_command_runs_as_typed_from_another_folder(workdir, tmp_path):
    cache = tmp_path / "cache"
    listed = readme_commands()
    repo_runs = set((REPO / "runs").glob("*"))
    for command in (c for c in COMMANDS if c in listed):
        result = run_readme(command, workdir, cache)
        if command.startswith("bench"):
            assert "usage: turn bench" in result.stdout
    # what the commands wrote is where the README's relative paths say, under the user's folder
    assert json.loads((workdir / "runs" / "demo" / "metrics.json").read_text())[0]["method"] == "lp-gce"
    mine = RunFolder(workdir / "runs" / "mine")
    assert mine.status()["state"] == "done"
    assert mine.config()["dataset"] == {"kind": "folder", "path": str(workdir / "path" / "to" / "folder")}
    manifest_runs = [f for f in (workdir / "runs").glob("turn-*") if RunFolder(f).exists()]
    assert len(manifest_runs) == 1 and RunFolder(manifest_runs[0]).status()["state"] == "done"
    assert RunFolder(manifest_runs[0]).config()["dataset"]["root"] == str(workdir / "images")
    assert RunFolder(workdir / "runs" / "two").status()["processes"] == 2
    tuned = RunFolder(workdir / "runs" / "scan-tuned")  # the scan's probe reused: no linear probing of its own
    assert tuned.status()["state"] == "done" and not [e for e in tuned.events() if e["stage"] == "lp"]
    assert tuned.estimate()["method"] == "turn+" and mine.estimate() is not None
    assert len(pd.read_csv(workdir / "cleaned.csv")) == mine.metrics()["n_train"]
    assert {p.name for p in (workdir / "cleaned").iterdir()} >= {"cat", "dog"}
    assert (workdir / "to-label" / "tasks.json").exists() and (workdir / "to-label" / "labeling_config.xml").exists()
    spot_tasks = [t for t in json.loads((workdir / "to-check" / "tasks.json").read_text()) if t["data"]["spot_check"]]
    assert len(spot_tasks) == ReviewStore(mine.review_db).spot_check_size() == min(100, mine.metrics()["n_train"])
    assert ReviewStore(mine.review_db).current() == {"cat/000.png": ("relabel", 1), "cat/001.png": ("ambiguous", None)}
    assert RunFolder(workdir / "runs" / "mine-2").status()["state"] == "done"
    mine3 = RunFolder(workdir / "runs" / "mine-3")
    assert mine3.status()["state"] == "done" and mine3.config()["retrained_from"]["ambiguous_choice"] == "keep"
    own = RunFolder(workdir / "runs" / "own")
    assert own.status()["state"] == "done" and own.config()["features"] == str(workdir / "features.npy")
    assert RunFolder(workdir / "runs" / "own-probs").metrics()["given_inputs"]["pred_probs"] == str(
        workdir / "probs.npy")
    crowd = RunFolder(workdir / "runs" / "crowd")
    assert crowd.status()["state"] == "done"
    assert crowd.config()["dataset"]["path"] == str(workdir / "crowd" / "labels.csv")
    assert {"consensus_label", "annotator_agreement"} <= set(pd.read_csv(workdir / "crowd.csv").columns)
    assert pd.read_csv(workdir / "annotators.csv").equals(pd.read_csv(workdir / "crowd_annotators.csv"))
    assert set((REPO / "runs").glob("*")) <= repo_runs  # nothing landed in the repository's runs/


# Free-text arguments of the `turn` subcommands that are names or settings, not files.
NOT_PATH_ARGS = {"data_kind", "noise", "method", "device", "precision", "projections", "format", "scope", "link",
                 "split", "methods", "settings", "dev_settings", "ablation_setting", "docs_section", "ambiguous",
                 "master", "annotator_columns", "aggregator"}


def test_every_path_argument_is_made_absolute_in_one_place(tmp_path):
    """Each subcommand's free-text arguments are either paths (`PATH_ARGS`, made absolute by
    `absolute_paths` right after parsing) or listed here as not paths: a new path argument
    cannot slip through unresolved."""
    import argparse

    from turn_backend.cli import PATH_ARGS, PATH_IF_EXISTS, absolute_paths, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        for action in command._actions:
            if action.type in (None, str) and action.nargs != 0 and action.dest != "help":
                assert action.dest in (*PATH_ARGS, *PATH_IF_EXISTS, *NOT_PATH_ARGS), (name, action.dest)
    (tmp_path / "hf-model").mkdir()
    args = absolute_paths(parser.parse_args(["run", "--data", "photos", "--root", "~/img", "--out", "runs/x",
                                             "--checkpoint", "w.pt", "--model", "hf-model"]), cwd=tmp_path)
    assert (args.data, args.out, args.checkpoint, args.model) == (
        str(tmp_path / "photos"), str(tmp_path / "runs" / "x"), str(tmp_path / "w.pt"), str(tmp_path / "hf-model"))
    assert args.root == str(Path("~/img").expanduser())
    args = absolute_paths(parser.parse_args(["run", "--model", "google/vit-base-patch16-224"]), cwd=tmp_path)
    assert (args.data, args.model) == ("demo", "google/vit-base-patch16-224")  # names stay names
    args = absolute_paths(parser.parse_args(["export", "../r", "--out", "a/b.csv"]), cwd=tmp_path / "w")
    assert (args.run_dir, args.out) == (str(tmp_path / "r"), str(tmp_path / "w" / "a" / "b.csv"))
    args = absolute_paths(parser.parse_args(["import-labels", "r", "../export.json"]), cwd=tmp_path / "w")
    assert (args.run_dir, args.file) == (str(tmp_path / "w" / "r"), str(tmp_path / "export.json"))
    args = absolute_paths(parser.parse_args(["bench", "--out", "o", "--docs", "d.md"]), cwd=tmp_path)
    assert (args.out, args.docs) == (str(tmp_path / "o"), str(tmp_path / "d.md"))
