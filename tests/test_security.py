"""Security: the server listens on this machine only, weights and data files never run code,
uploads are size-limited, exported CSV cells never run as spreadsheet formulas.

Every test is marked `@pytest.mark.reliability(area="security", ...)` and listed in
docs/reliability.md (see tests/test_reliability_doc.py).
"""

from __future__ import annotations

import ast
import csv
import io
import json
import os
import pickle
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomllib
import torch

from helpers.server import AppServer
from turn_backend.errors import ModelError
from turn_backend.export import build_export, write_export

REPO = Path(__file__).resolve().parents[1]
reliability = pytest.mark.reliability


# -------------------------------------------------------------------------------- server


def _listening(port: int) -> list[str]:
    """Addresses with a TCP socket listening on `port`, from /proc/net/tcp and tcp6."""
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            addr_hex, port_hex = fields[1].split(":")
            if fields[3] != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(addr_hex)
            # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.append(socket.inet_ntop(family, raw))
    return found


def _other_addresses() -> list[str]:
    """This machine's IPv4 addresses that are not loopback."""
    addrs = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            addrs.add(info[4][0])
    except OSError:
        pass
    try:  # the address used to reach other machines, without sending anything
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            addrs.add(s.getsockname()[0])
    except OSError:
        pass
    return sorted(a for a in addrs if not a.startswith("127."))


@reliability(area="security", case="Where the app server listens, started as `streamlit run app/main.py` with the "
                                   "repository's .streamlit/config.toml",
             outcome="Bound to the loopback address only (127.0.0.1 / ::1), never 0.0.0.0 or ::; connecting through "
                     "the machine's other addresses is refused. Sharing on a network needs an explicit "
                     "`--server.address 0.0.0.0`")
def test_server_listens_on_localhost_only(tmp_path):
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "localhost"
    with AppServer(tmp_path / "runs", tmp_path / "server.log").start() as server:
        addresses = _listening(server.port)
        assert addresses, "nothing listens on the server's port"
        assert set(addresses) <= {"127.0.0.1", "::1"}, addresses
        for address in _other_addresses():
            with socket.socket() as s, pytest.raises(OSError):
                s.settimeout(3)
                s.connect((address, server.port))


# ------------------------------------------------------------------------------- weights


class Evil:
    """Pickled, this runs a shell command when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@reliability(area="security", case="A checkpoint (`--checkpoint x.pth`) that is a pickle with a malicious "
                                   "`__reduce__`, in torch's zip format or as a plain pickle",
             outcome="Refused with ModelError `could not read checkpoint ... as plain tensors` (torch.load with "
                     "weights_only=True); the payload never runs")
@pytest.mark.parametrize("fmt", ["torch", "pickle"])
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_checkpoint_is_refused_and_nothing_runs(tmp_path, fmt):
    from turn_backend.models import registry

    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pth"
    payload = {"conv1.weight": torch.zeros(1), "evil": Evil(marker)}
    if fmt == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ModelError, match="could not read checkpoint .* as plain tensors"):
        registry._load_state_dict(str(path))
    with pytest.raises(ModelError, match="as plain tensors"):
        registry.load_model("timm:resnet18", checkpoint=str(path), pretrained=False)
    assert not marker.exists()


def unsafe_loading(source: str, filename: str = "<string>") -> list[str]:
    """Places in `source` that could run code from a file or a hub.

    - `trust_remote_code=` anything but the constant False;
    - `torch.load(...)` without `weights_only=True`;
    - `pickle.load` / `pickle.loads` (and dill, joblib, cloudpickle, marshal, shelve loaders),
      `pandas.read_pickle`, `numpy.load(..., allow_pickle=True)`;
    - `pickle.Unpickler` other than as the base of a class that restricts `find_class`.
    """
    tree = ast.parse(source, filename)
    problems: list[str] = []
    restricted_bases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
                isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in node.body):
            restricted_bases.update(id(b) for b in node.bases)

    def where(node) -> str:
        return f"{filename}:{node.lineno}"

    def kw(call: ast.Call, name: str):
        return next((k.value for k in call.keywords if k.arg == name), None)

    def is_const(value, expected) -> bool:
        return isinstance(value, ast.Constant) and value.value is expected

    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "trust_remote_code" and not is_const(node.value, False):
            problems.append(f"{where(node.value)}: trust_remote_code is not False")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            mod, attr = node.value.id, node.attr
            if mod in ("pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve") and \
                    attr in ("load", "loads", "open"):
                problems.append(f"{where(node)}: {mod}.{attr}")
            if mod in ("pickle", "dill") and attr == "Unpickler" and id(node) not in restricted_bases:
                problems.append(f"{where(node)}: {mod}.Unpickler without a restricted find_class")
            if mod in ("pd", "pandas") and attr == "read_pickle":
                problems.append(f"{where(node)}: {mod}.read_pickle")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                isinstance(node.func.value, ast.Name):
            mod, attr = node.func.value.id, node.func.attr
            if mod == "torch" and attr == "load" and not is_const(kw(node, "weights_only"), True):
                problems.append(f"{where(node)}: torch.load without weights_only=True")
            if mod in ("np", "numpy") and attr == "load" and kw(node, "allow_pickle") is not None and \
                    not is_const(kw(node, "allow_pickle"), False):
                problems.append(f"{where(node)}: numpy.load with allow_pickle")
        if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "dill", "joblib", "torch") and \
                any(a.name in ("load", "loads", "Unpickler") for a in node.names):
            problems.append(f"{where(node)}: from {node.module} import {', '.join(a.name for a in node.names)}")
    return problems


def test_unsafe_loading_checker_finds_each_pattern():
    bad = """
import pickle, torch, numpy as np, pandas as pd
from torch import load
m = AutoModel.from_pretrained(name, trust_remote_code=True)
m = AutoModel.from_pretrained(name, trust_remote_code=flag)
torch.load(p)
torch.load(p, weights_only=False)
pickle.load(fh)
pickle.loads(b)
np.load(p, allow_pickle=True)
pd.read_pickle(p)
class Loose(pickle.Unpickler):
    pass
"""
    assert len(unsafe_loading(bad)) == 10
    good = """
import pickle, torch, numpy as np
torch.load(p, weights_only=True, map_location="cpu")
AutoConfig.from_pretrained(name, trust_remote_code=False)
np.load(p, mmap_mode="r")
class Strict(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(name)
"""
    assert unsafe_loading(good) == []


@reliability(area="security", case="Code that could run code from a file or a hub: `trust_remote_code=True`, "
                                   "`torch.load` without `weights_only=True`, `pickle.load(s)`, `numpy.load("
                                   "allow_pickle=True)`, an unrestricted `pickle.Unpickler` (AST scan of "
                                   "turn_backend/, app/, pages/, scripts/)",
             outcome="None anywhere; the only unpickler is the CIFAR one that allows numpy array constructors only "
                     "(its refusal of a malicious CIFAR file is tested in test_datasets.py)")
def test_no_code_loads_untrusted_objects():
    files = [p for d in ("turn_backend", "app", "pages", "scripts") for p in sorted((REPO / d).rglob("*.py"))]
    assert len(files) > 20
    problems = []
    for path in files:
        problems += unsafe_loading(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert problems == []
    unpicklers = [str(p.relative_to(REPO)) for p in files if "Unpickler" in p.read_text(encoding="utf-8")]
    assert unpicklers == ["turn_backend/data/standard.py"]


# ------------------------------------------------------------------------------- uploads


@reliability(area="security", case="An upload larger than the limits (server.maxUploadSize in .streamlit/"
                                   "config.toml; the Dataset page's manifest uploader)",
             outcome="server.maxUploadSize is 200 MB (Streamlit refuses larger uploads); the manifest uploader is "
                     "limited to 50 MB, and a larger file that reaches the page anyway is refused with an error and "
                     "never written to disk; a small manifest is saved under the runs folder")
def test_uploads_are_size_limited(runs_root):
    from streamlit.testing.v1 import AppTest

    server_limit = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())["server"]["maxUploadSize"]
    assert 0 < server_limit <= 200
    at = AppTest.from_file(str(REPO / "pages" / "dataset.py"), default_timeout=180)
    at.run()
    at.radio(key="ds_source").set_value("manifest").run()
    at.radio(key="ds_manifest_mode").set_value("Upload").run()
    assert not at.exception
    uploader = at.file_uploader(key="ds_manifest_upload")
    page_limit = uploader.proto.max_upload_size_mb
    assert 0 < page_limit <= server_limit
    big = b"path,label\n" + b"x" * (page_limit * 2**20)
    uploader.upload("big.csv", big, "text/csv")
    at.run()
    assert not at.exception
    assert any(f"uploads are limited to {page_limit} MB" in e.value for e in at.error)
    uploads = runs_root / "_uploads"
    assert not uploads.exists() or not any(uploads.iterdir())
    small = b"path,label\na.png,cat\n"
    at.file_uploader(key="ds_manifest_upload").set_value(("labels.csv", small, "text/csv"))
    at.run()
    assert not at.exception
    saved = list(uploads.iterdir())
    assert len(saved) == 1 and saved[0].read_bytes() == small and saved[0].name.endswith("-labels.csv")


# -------------------------------------------------------------------------------- export

FORMULAS = ['=HYPERLINK("http://evil.example","click")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)",
            "\t=1+1", "\r=1+1"]


@reliability(area="security", case="Class names, image paths and sample ids that start with =, +, -, @, tab or CR "
                                   "(spreadsheet formula injection) in a CSV export",
             outcome="Every such cell is written with a leading ' (shown as text by spreadsheets), also for pandas 3 "
                     "`str` columns; rows end in CRLF so a CR or LF inside a name is quoted and cannot start a new "
                     "row; no cell starts with a formula character; numbers stay numbers")
def test_csv_export_escapes_formula_cells(tiny_run, tmp_path):
    classes = json.loads((tiny_run / "classes.json").read_text())
    classes[: len(FORMULAS)] = FORMULAS
    (tiny_run / "classes.json").write_text(json.dumps(classes))
    samples = pd.read_parquet(tiny_run / "samples.parquet")
    train = np.flatnonzero(samples["split"] == "train")
    for k, formula in enumerate(FORMULAS):
        samples.loc[train[k], "source"] = formula
        samples.loc[train[k + 10], "sample_id"] = f"{formula}-{k}"
    samples.to_parquet(tiny_run / "samples.parquet", index=False)

    df = build_export(tiny_run)
    out = write_export(df, tmp_path / "labels.csv")
    rows = list(csv.reader(io.StringIO(out.read_bytes().decode("utf-8"), newline="")))
    assert rows[0] == list(df.columns) and len(rows) == len(df) + 1
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    text_columns = [c for c in df.columns
                    if pd.api.types.is_object_dtype(df[c]) or pd.api.types.is_string_dtype(df[c])]
    assert {"sample_id", "path", "given_label", "predicted_label", "final_label"} <= set(text_columns)
    escaped = 0
    for i, row in enumerate(rows[1:]):
        for j, col in enumerate(df.columns):
            value = df.iloc[i][col]
            if col in text_columns and isinstance(value, str) and value.startswith(tuple("=+-@\t\r")):
                assert row[j] == "'" + value
                escaped += 1
    assert escaped >= 2 * len(FORMULAS)  # the paths, the ids and every label cell that holds such a class
    clean = pd.read_csv(out)
    assert clean["clean_prob"].dtype == float and clean["flagged"].dtype == bool
