"""Shared UI helpers for the TURN Studio pages: header, state badge, empty states, errors,
links between pages, the run picker in the sidebar, and cached run data.

Every page file puts the repo root on sys.path first, so it also runs standalone
(`streamlit run pages/x.py`, `AppTest.from_file("pages/x.py")`):

    import sys
    from pathlib import Path
    ROOT = str(Path(__file__).resolve().parents[1])
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)

then `from app import ui`.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app.state import current_run, runs_root, set_current_run  # noqa: E402
from turn_backend.config import DEFAULT_DATASET, DEFAULT_NOISE, RunConfig  # noqa: E402
from turn_backend.reviewed import apply_reviewed_labels  # noqa: E402
from turn_backend.rundata import load_run_data  # noqa: E402  (not runner: that imports torch)
from turn_backend.runfolder import RunFolder, list_runs  # noqa: E402
from turn_backend.worker import live_state  # noqa: E402

# ------------------------------------------------------------------------ widget state

# Streamlit forgets a widget's value once a page without that widget has run. These keys
# (the Dataset and Train settings) are re-assigned on every run by app/main.py, so the
# choices survive a visit to another page. Buttons and uploaders cannot be assigned.
PERSISTENT_KEYS = (
    "ds_source", "ds_demo_train", "ds_demo_test", "ds_folder_path", "ds_manifest_mode", "ds_manifest_path",
    "ds_manifest_root", "ds_hf_path", "ds_hf_train_split", "ds_hf_test_split", "ds_noise_kind",
    "ds_noise_rate", "ds_noise_seed", "ds_show_classes", "ds_only_wrong",
    "tr_model_source", "tr_timm_name", "tr_checkpoint", "tr_hf_name", "tr_method", "tr_device",
    "tr_image_size", "tr_batch", "tr_lp_epochs", "tr_fft_epochs", "tr_tau", "tr_seed", "tr_lp_opt",
    "tr_lp_lr", "tr_lp_wd", "tr_fft_opt", "tr_fft_lr", "tr_fft_wd", "tr_freeze_bn", "tr_projections",
    "tr_projection_split",
    "emb_method", "emb_colour", "emb_flagged", "review_given_filter", "review_pred_filter", "review_kind_filter",
    "review_only_undecided", "export_scope", "export_format",
)


def keep_widget_state(keys=PERSISTENT_KEYS) -> None:
    for key in keys:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


# --------------------------------------------------------------------------------- pages

# name -> (file, title, Material icon). app/main.py builds the navigation from this table,
# and `page_link` / `switch_page` use it, so titles and icons are the same everywhere.
PAGES: dict[str, tuple[Path, str, str]] = {
    "runs": (ROOT / "pages" / "runs.py", "Runs", ":material/folder_open:"),
    "dataset": (ROOT / "pages" / "dataset.py", "Dataset", ":material/dataset:"),
    "train": (ROOT / "pages" / "train.py", "Train", ":material/model_training:"),
    "embeddings": (ROOT / "pages" / "embeddings.py", "Embeddings", ":material/scatter_plot:"),
    "threshold": (ROOT / "pages" / "threshold.py", "Threshold", ":material/tune:"),
    "review": (ROOT / "pages" / "review.py", "Review", ":material/rate_review:"),
    "export": (ROOT / "pages" / "export.py", "Export", ":material/download:"),
    "classes": (ROOT / "pages" / "classes.py", "Classes", ":material/category:"),
    "noise": (ROOT / "pages" / "noise.py", "Noise matrix", ":material/grid_on:"),
    "compare": (ROOT / "pages" / "compare.py", "Compare runs", ":material/compare_arrows:"),
    "annotators": (ROOT / "pages" / "annotators.py", "Annotators", ":material/groups:"),
}
SECTIONS: dict[str, list[str]] = {
    "Project": ["runs", "dataset", "train", "compare"],
    "Audit": ["embeddings", "threshold", "classes", "noise", "annotators", "review", "export"],
}


def page_relevant(name: str) -> bool:
    """Whether the navigation lists page `name` for the current run: Annotators only for a run
    whose data has several annotators per image."""
    if name == "annotators":
        run = current_run()
        return run is not None and run.has_annotators()
    return True


# The Material Symbols "label" glyph (viewBox 0 -960 960 960), as the app's logo.
_LABEL_PATH = ("M840-480 666-234q-11 16-28.5 25t-37.5 9H200q-33 0-56.5-23.5T120-280v-400q0-33 "
               "23.5-56.5T200-760h400q20 0 37.5 9t28.5 25l174 246Z")
ICON_SVG = (f'<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32" viewBox="0 -960 960 960">'
            f'<path fill="#4F46E5" d="{_LABEL_PATH}"/></svg>')
LOGO_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="190" height="32" viewBox="0 0 190 32">'
    f'<g transform="translate(0,32) scale(0.0333)"><path fill="#4F46E5" d="{_LABEL_PATH}"/></g>'
    '<text x="38" y="23" font-family="Source Sans Pro, Source Sans 3, Helvetica, Arial, sans-serif" '
    'font-size="21" font-weight="700" fill="#31333F">TURN Studio</text></svg>'
)


def page_link(name: str, label: str | None = None, icon: str | None = None, *,
              help: str | None = None, disabled: bool = False, container=None) -> None:
    """A link to another page of the app (by its name in PAGES).

    When a page runs standalone (no st.navigation: tests, `streamlit run pages/x.py`) the
    target is not registered; the link then shows as plain text instead of failing.
    """
    target = container or st
    file, title, page_icon = PAGES[name]
    label = label or title
    icon = icon or page_icon
    try:
        target.page_link(str(file), label=label, icon=icon, help=help, disabled=disabled)
    except Exception:  # noqa: BLE001 - StreamlitPageNotFoundError outside the navigation
        target.markdown(f":gray[{icon} {label}]", help=f"Open the {title} page from the navigation")


def switch_page(name: str) -> None:
    """Go to another page; does nothing when the page is not registered (standalone runs)."""
    try:
        st.switch_page(str(PAGES[name][0]))
    except Exception as exc:  # pragma: no cover - only outside the navigation
        if type(exc).__name__ in ("RerunException", "StopException"):
            raise


# -------------------------------------------------------------------------------- layout


def page_header(title: str, icon: str, caption: str | None = None) -> None:
    """The page title with its Material icon, and a one-line description."""
    st.title(f"{icon} {title}", anchor=False)
    if caption:
        st.caption(caption)


STATE_STYLE: dict[str, tuple[str, str, str]] = {
    # state -> (badge colour, Material icon, label)
    "new": ("gray", ":material/fiber_new:", "New"),
    "queued": ("gray", ":material/schedule:", "Queued"),
    "starting": ("blue", ":material/hourglass_top:", "Starting"),
    "running": ("blue", ":material/autorenew:", "Running"),
    "done": ("green", ":material/check_circle:", "Done"),
    "failed": ("red", ":material/error:", "Failed"),
    "stopped": ("orange", ":material/stop_circle:", "Stopped"),
    "interrupted": ("orange", ":material/warning:", "Interrupted"),
}


def state_style(state: str | None) -> tuple[str, str, str]:
    return STATE_STYLE.get(state or "new", ("gray", ":material/help:", str(state).capitalize()))


def state_badge(state: str | None, container=None) -> None:
    """A coloured badge for a run state (done, running, failed, ...)."""
    color, icon, label = state_style(state)
    (container or st).badge(label, icon=icon, color=color)


def state_markdown(state: str | None) -> str:
    """The badge as a Markdown directive, for use inside text and tables' captions."""
    color, icon, label = state_style(state)
    return f":{color}-badge[{icon} {label}]"


def empty_state(message: str, *, icon: str = ":material/info:", page: str | None = None,
                label: str | None = None, container=None) -> None:
    """What to do next, when there is nothing to show (no run, no data)."""
    target = container or st
    target.info(message, icon=icon)
    if page:
        page_link(page, label=label, container=target)


def show_error(error: BaseException | str, hint: str | None = None, container=None) -> None:
    """A readable error (never a traceback); `hint` says what to fix."""
    text = str(error) if not isinstance(error, BaseException) else (str(error) or type(error).__name__)
    if hint:
        text = f"{text}\n\n{hint}"
    (container or st).error(text, icon=":material/error:")


UNTRUSTED_FLAGS = "These flags cannot be trusted."
# Streamlit's caption look, for captions written as HTML (beside an inlined image)
CAPTION_STYLE = "font-size:0.85rem;color:rgba(49, 51, 63, 0.6);line-height:1.4"


def unreliable_flags_warning(reliability: dict | None, container=None, recalibrated_on: int = 0,
                             counted_here: bool = True) -> None:
    """Where the run's reliability check found that its model cannot judge the labels
    (`detect.estimates.judge_reliability`): say so plainly, why, and what to try. Where the
    flags can be used but the estimates are rough (few images per class), a milder note says so,
    and where the estimates are recalibrated on `recalibrated_on` Review decisions, that they are:
    on this page, or (`counted_here` False: Review, whose order stays the model's own) on the pages
    that count with them. Nothing otherwise."""
    if not reliability:
        return
    if reliability.get("reliable", True):
        cautions = reliability.get("cautions") or []
        text = " ".join(c[0].upper() + c[1:] + "." for c in cautions)
        if cautions and recalibrated_on:
            from turn_backend.detect.estimates import ROUGH_ESTIMATES_ADVICE  # loaded already where recalibrated

            rough = text.replace(": " + ROUGH_ESTIMATES_ADVICE, "")  # the advice is taken
            where = ("The estimates here are counted" if counted_here else
                     "The Threshold, Classes and Noise matrix pages count their estimates")
            (container or st).info(
                f"**Recalibrated on your {fmt_int(recalibrated_on)} Review decisions.** The model's own estimates "
                f"are rough: {rough[0].lower() + rough[1:]} {where} with the clean probabilities refitted to your "
                "decisions instead" + ("" if counted_here else " (the order here stays the model's own)")
                + "; more spot-check decisions narrow them further.", icon=":material/rule:")
        elif cautions:
            (container or st).warning("**Rough estimates.** " + text, icon=":material/info:")
        return
    reasons = " ".join(r[0].upper() + r[1:] + "." for r in reliability.get("reasons", []))
    fixes = reliability.get("fixes") or []
    (container or st).error(
        f"**{UNTRUSTED_FLAGS}** {reasons} A low clean probability here means the model is unsure, "
        "not that the label is wrong, and the estimated noise rate, precision and recall mean nothing."
        + (f" Likely fixes: {'; '.join(fixes)}." if fixes else ""), icon=":material/gpp_maybe:")


# ------------------------------------------------------------------------------ formatting


def fmt_pct(x, digits: int = 1) -> str:
    if x is None:
        return "–"
    try:
        return f"{float(x):.{digits}%}"
    except (TypeError, ValueError):
        return "–"


def fmt_int(x) -> str:
    if x is None:
        return "–"
    try:
        return f"{int(x):,}"
    except (TypeError, ValueError):
        return "–"


def fmt_seconds(s) -> str:
    if s is None:
        return "–"
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def fmt_time(ts) -> str:
    if not ts:
        return "–"
    return datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M")


def dataset_label(spec: dict | None) -> str:
    """A short human name for a dataset spec."""
    spec = spec or {}
    kind = spec.get("kind", "?")
    if spec.get("name"):
        return str(spec["name"])
    if kind == "demo":
        return f"Fashion-MNIST demo ({spec.get('n_train', 3000)}/{spec.get('n_test', 1000)})"
    if spec.get("path"):
        return f"{kind}: {Path(str(spec['path'])).name}"
    return str(kind)


def noise_label(noise: dict | None) -> str:
    noise = noise or {}
    kind = noise.get("kind", "none")
    if kind == "none" or not noise.get("rate"):
        return "no synthetic noise"
    return f"{kind} {float(noise['rate']):.0%}"


# ------------------------------------------------------------------------- dataset choice

# What the Dataset page hands to the Train page (st.session_state["dataset_spec"] and
# ["noise_spec"]); a new user who goes straight to Train gets the demo with 40% noise.
DEFAULT_DATASET_SPEC = DEFAULT_DATASET
DEFAULT_NOISE_SPEC = DEFAULT_NOISE


def dataset_choice() -> tuple[dict, dict]:
    """The dataset spec and noise spec chosen on the Dataset page (or the defaults)."""
    spec = st.session_state.get("dataset_spec") or dict(DEFAULT_DATASET_SPEC)
    noise = st.session_state.get("noise_spec") or dict(DEFAULT_NOISE_SPEC)
    return dict(spec), dict(noise)


# ------------------------------------------------------------------------------ run data


def run_state(folder: RunFolder) -> dict:
    """status.json, corrected when the worker died without saying so."""
    try:
        return live_state(folder.path)
    except Exception:  # noqa: BLE001 - an unreadable status must not break a page
        return folder.status()


def run_summary(folder: RunFolder) -> dict:
    """One row of the runs table: what a run is and how it went."""
    cfg = folder.config()
    metrics = folder.metrics()
    status = run_state(folder)
    try:
        created = folder.config_path.stat().st_mtime
    except OSError:
        created = None
    return {
        "name": folder.name,
        "method": cfg.get("method", "?"),
        "model": cfg.get("model", "?"),
        "dataset": dataset_label(cfg.get("dataset")),
        "noise": noise_label(cfg.get("noise")),
        "state": status.get("state", "new"),
        "test_acc": metrics.get("test_acc_best"),
        "test_acc_last": metrics.get("test_acc_last"),
        "n_clean": metrics.get("n_clean"),
        "purity": metrics.get("clean_purity"),
        "est_noise": (metrics.get("estimated_noise_rate") or {}).get("rate"),
        "flags_reliable": metrics.get("flags_reliable"),
        "reliability": metrics.get("flags_reliability"),
        "created": created,
    }


def class_names(folder: RunFolder) -> list[str]:
    return folder.class_names()


@st.cache_resource(show_spinner="Loading the run's dataset…", max_entries=4)
def _load_run_bundle(run_dir: str, config_mtime: float):
    bundle = load_run_data(RunConfig.from_json(RunFolder(run_dir).config_path))
    # a run retrained with review decisions trains without the removed samples: its
    # training positions (what the pages index images by) are those of the reduced set
    reviewed = apply_reviewed_labels(bundle, run_dir)
    return bundle if reviewed is None else reviewed.bundle


def run_bundle(folder: RunFolder):
    """The run's dataset with its noise (a DatasetBundle), cached per run folder.

    Raises DatasetError / ValueError when the data is gone; callers show `show_error`.
    """
    return _load_run_bundle(str(folder.path.resolve()), folder.config_path.stat().st_mtime)


class _QuietPreloadThread(logging.Filter):
    """Streamlit warns about a thread without a script context when the preload thread uses
    the cache; that is expected here, so that one message is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not threading.current_thread().name.startswith("turn-preload")


logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(_QuietPreloadThread())
_PRELOADS: dict[tuple, threading.Thread] = {}
_PRELOADS_LOCK = threading.Lock()


def _load_images(run_dir: str, config_mtime: float) -> None:
    _load_run_bundle(run_dir, config_mtime)
    from PIL import Image

    Image.init()  # the image format plugins, which the first thumbnail's encoding would import


def _preload(load, args: tuple, after_s: float) -> None:
    try:
        time.sleep(after_s)
        load(*args)
    except Exception:  # noqa: BLE001 - the page that needs the data shows the error then
        pass


def preload(load, *args, after_s: float = 0.2) -> None:
    """Call `load(*args)` (a cached loader) in a background thread, once per loader and
    arguments, so that what a page shows later does not wait for it; a later call of the
    loader waits for this one instead of starting another (the cache computes each value
    once). Call it at the end of a page's script: a load that holds the GIL, run beside the
    script, made the Embeddings page's first render about 1 s slower on a busy 2-core
    machine. `after_s` lets the page's last messages go out first."""
    key = (getattr(load, "__qualname__", repr(load)), *args)
    with _PRELOADS_LOCK:
        if key in _PRELOADS:
            return
        _PRELOADS[key] = thread = threading.Thread(target=_preload, args=(load, args, after_s), daemon=True,
                                                   name="turn-preload")
    thread.start()


def preload_run_bundle(folder: RunFolder, after_s: float = 0.2) -> None:
    """Start loading the run's dataset in the background (`preload`), so that the first image
    a page shows later (the Embeddings hover thumbnail) does not wait for it: about 0.5 s for
    60,000 Fashion-MNIST images."""
    try:
        mtime = folder.config_path.stat().st_mtime
    except OSError:
        return
    preload(_load_images, str(folder.path.resolve()), mtime, after_s=after_s)


# ------------------------------------------------------------------------ chart preloading

# Streamlit loads its Plotly chart code (a 4.7 MB script that takes about 1 s to run on a
# busy 2-core machine) only when the first chart element reaches the browser, which on the
# Embeddings page is after the server has built the map of every sample. A page that draws
# charts mounts this invisible component first: the browser then loads that same module
# while the server is still computing, and the charts draw as soon as they arrive.
_PRELOAD_JS = """
export default function (component) {
  const { data } = component;
  const w = window;
  if (w.__turnChartsLoading || !data || !data.src) return;
  w.__turnChartsLoading = true;
  import(new URL(data.src, document.baseURI).href).catch(() => { w.__turnChartsLoading = false; });
}
"""
_preloader = None


def _chart_module() -> str | None:
    """The path of Streamlit's Plotly chart module under the server's root, or None where this
    Streamlit build names it differently (then nothing is preloaded)."""
    found = sorted((Path(st.__file__).parent / "static" / "static" / "js").glob("PlotlyChart.*.js"))
    return f"static/js/{found[0].name}" if len(found) == 1 else None


def preload_charts() -> None:
    """Start loading the browser's chart code now (in the sidebar, where it takes no room);
    call it at the top of a page whose charts come after a slow computation."""
    global _preloader
    src = _chart_module()
    if src is None:
        return
    if _preloader is None:
        _preloader = st.components.v2.component("turn_studio.chart_preload", js=_PRELOAD_JS)
    with st.sidebar:
        _preloader(key="turn_chart_preload", data={"src": src}, height=0)


# ------------------------------------------------------------------------------ run picker


def require_run() -> RunFolder:
    """The current run; without one, an empty state pointing at Train, and the page stops."""
    folder = current_run()
    if folder is None:
        empty_state("No run yet: open the Train page to start one (the demo dataset is preselected).",
                    icon=":material/lightbulb:", page="train", label="Start a run")
        st.stop()
    return folder


def require_finished_run(what_then: str) -> RunFolder:
    """The current run, finished; otherwise an empty state saying `what_then` (what this
    page shows once the run has finished) with a link to Train, and the page stops."""
    run = require_run()
    if not run.has_final():  # reading final() took 0.3 s of every page's run at 1,000,000 samples
        state = run_state(run).get("state", "new")
        empty_state(f"Run **{run.name}** has no results yet ({state_style(state)[2].lower()}). "
                    f"{what_then} once it has finished: follow it on the Train page.",
                    icon=":material/hourglass_top:", page="train", label="Open Train")
        st.stop()
    return run


def run_picker() -> RunFolder | None:
    """Sidebar: the current run (name, state, method, model) and a selectbox to switch."""
    root = runs_root()
    runs = list_runs(root)
    current = current_run()
    with st.sidebar:
        st.subheader(":material/label: Current run", anchor=False)
        if not runs or current is None:
            st.caption("No runs yet. Start one on the Train page.")
            return None
        names = [r.name for r in runs]
        if current.name not in names:  # a run outside the root (set by path)
            names.insert(0, current.name)
        # A page changed the current run (Follow it on the Train page): the picker, still
        # showing what it showed last time, follows instead of switching back.
        shown = st.session_state.get("sidebar_run_shown")
        if st.session_state.get("sidebar_run_picker") == shown and shown != current.name:
            st.session_state["sidebar_run_picker"] = current.name
        choice = st.selectbox("Run", names, index=names.index(current.name), key="sidebar_run_picker",
                              label_visibility="collapsed", help=f"Runs under {root}")
        st.session_state["sidebar_run_shown"] = choice
        if choice != current.name:
            current = next((r for r in runs if r.name == choice), current)
            set_current_run(current)
        summary = run_summary(current)
        state_badge(summary["state"])
        st.caption(f"**Method** {summary['method']}  \n**Model** {summary['model']}  \n"
                   f"**Data** {summary['dataset']}, {summary['noise']}")
        if summary["test_acc"] is not None:
            st.caption(f"**Test accuracy** {fmt_pct(summary['test_acc'])} best")
    return current

