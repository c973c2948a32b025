"""The registry of methods (turn_backend.methods): what it lists, how it refuses, and that
every method it holds names stages the orchestrator has."""

import subprocess
import sys
from pathlib import Path

import pytest

from turn_backend.config import RunConfig
from turn_backend.methods import Method, get_method, list_methods, register_method


def test_lists_the_run_methods_then_the_bench_only_baselines():
    assert list_methods() == ["turn+", "turn", "lp-ce", "lp-gce", "lp-elr", "fft-ce", "fft-gce", "fft-elr",
                              "fft-true"]
    assert list_methods(include_bench_only=True) == [*list_methods(), "dividemix-lp", "unicon-lp", "cleanlab-fft"]
    for name in ("dividemix-lp", "unicon-lp", "cleanlab-fft"):
        assert get_method(name).bench_only and get_method(name).run_standalone is not None


def test_each_entry_carries_kind_loss_rounds_and_options():
    turn, plus = get_method("turn"), get_method("turn+")
    assert (turn.kind, turn.loss, turn.probe_loss, turn.default_rounds) == ("turn", "ce", "gce", 4)
    assert (plus.default_rounds, plus.options["scoring"], turn.options["balance"]) == (5, "ensemble", "min")
    lp_elr, fft_gce = get_method("lp-elr"), get_method("fft-gce")
    assert (lp_elr.kind, lp_elr.loss, lp_elr.probe_loss) == ("lp", "elr", "elr")
    assert (fft_gce.kind, fft_gce.loss, fft_gce.default_rounds) == ("fft", "gce", 5)
    assert get_method("fft-true").trains_on_true_labels and get_method("fft-true").loss == "ce"
    assert "published" in turn.description


def test_every_method_names_stages_the_orchestrator_runs_in_its_order():
    from turn_backend.runner import STAGES

    order = list(STAGES)
    for name in list_methods():
        stages = get_method(name).stages
        assert stages[0] == "data" and stages[-1] == "metrics", name
        assert [order.index(s) for s in stages] == sorted(order.index(s) for s in stages), name
    assert "rounds" not in get_method("lp-gce").stages and "probe" not in get_method("fft-ce").stages


def test_config_reads_the_registry():
    assert RunConfig(method="turn").rounds == 4 and RunConfig(method="turn+").rounds == 5
    assert RunConfig(method="fft-ce").rounds == 5 and RunConfig(method="lp-ce", fft_epochs=3).rounds == 0
    assert RunConfig(method="turn", fft_epochs=2).rounds == 2
    # a method takes only the TURN options it registers: the baselines none, whatever the config says
    assert RunConfig(method="fft-ce", balance="mean").turn_option("balance") is None
    assert RunConfig(method="turn+", balance="min").turn_option("balance") == "min"
    with pytest.raises(ValueError, match="unknown method 'nope'; choose one of turn\\+, turn"):
        RunConfig(method="nope")


def test_bad_registrations_are_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_method(get_method("turn"))
    with pytest.raises(ValueError, match="either stages or run_standalone"):
        Method(name="x", description="", kind="lp", loss="ce")
    with pytest.raises(ValueError, match="say why in bench_only"):
        Method(name="x", description="", kind="lp", loss="ce", run_standalone=lambda config, run_dir: {})
    with pytest.raises(ValueError, match="kind must be one of"):
        Method(name="x", description="", kind="probe", loss="ce", stages=("data",))


def test_a_bench_only_method_is_not_started_as_a_run(tmp_path):
    from turn_backend.runner import create_run

    with pytest.raises(ValueError, match="dividemix-lp runs in `turn bench` only: .*no per-sample clean"):
        create_run(RunConfig(method="dividemix-lp"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_registry_loads_without_torch():
    """config validation and the app's Train page read it in processes that never train"""
    code = ("import sys; from turn_backend.methods import list_methods; from turn_backend.config import RunConfig; "
            "list_methods(True); RunConfig(method='cleanlab-fft'); "
            "print(sorted(m for m in ('torch', 'sklearn', 'cleanlab') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_turn_methods_lists_the_registry(capsys):
    from turn_backend.cli import main

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in list_methods(include_bench_only=True))
    assert "stages: data > features > audit > probe > rounds > choice" in out and "bench only: " in out
