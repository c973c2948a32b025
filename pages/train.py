"""Train: choose a model and a method, start a run in a worker process, follow it live.

Training never runs inside this script: `Start` writes a run folder and launches
`turn_backend.worker` (app.training); the progress panel (app.train_progress) only reads the
run folder, so it reattaches after a refresh and keeps working when the tab was closed.
"""

from __future__ import annotations

import streamlit as st

from app import run_estimate, training, ui
from app.given_inputs import given_choice
from app.state import current_run, user_path
from app.train_progress import progress_panel
from turn_backend.config import DEFAULT_METHOD, GIVEN_INPUTS_METHOD, RunConfig, method_kind
from turn_backend.methods import get_method, list_methods
from turn_backend.models.hparams import PAPER_HPARAMS, family_of
from turn_backend.models.registry import DEFAULT_MODEL

MODEL_SOURCES = {
    "embedded": ":material/inventory_2: Embedded: EfficientNet-Lite0",
    "timm": ":material/deployed_code: timm model",
    "hf": ":material/hub: Hugging Face (hub id or folder)",
}
OPTIMIZERS = ["adamw", "sgd"]
BATCH_SIZES = [8, 16, 32, 64, 128, 256, 512]
PROJECTIONS = {"tsne": "t-SNE", "umap": "UMAP"}
FAMILY_NAMES = {
    "vit": "ViT", "convnext": "ConvNeXt", "mae": "MAE-ViT", "msn": "MSN-ViT", "clip": "CLIP-ViT",
    "resnet": "ResNet", "efficientnet": "EfficientNet",
}


# ---------------------------------------------------------------------------- the form


def settings_form() -> None:
    spec, noise = ui.dataset_choice()
    st.subheader(":material/tune: New run", anchor=False)

    with st.container(border=True):
        st.markdown("**Data**")
        st.markdown(f":material/dataset: {ui.dataset_label(spec)} · {ui.noise_label(noise)}")
        given = given_choice(spec)
        if given:
            st.markdown(":material/scatter_plot: Your own " + " and ".join(
                "probabilities" if f == "pred_probs" else "features" for f in given if f != "test_features")
                + ": the image model is not loaded (its family below sets the probe's settings); linear "
                "probing only")
        ui.page_link("dataset", label="Change the dataset or the noise", icon=":material/edit:")

    # --- model
    st.session_state.setdefault("tr_model_source", "embedded")
    st.session_state.setdefault("tr_timm_name", "vit_base_patch16_224")
    st.session_state.setdefault("tr_hf_name", "google/vit-base-patch16-224")
    st.radio("Model", list(MODEL_SOURCES), format_func=MODEL_SOURCES.get, key="tr_model_source",
             help="EfficientNet-Lite0 ships with the app and works offline. timm and Hugging Face models "
                  "need their weights reachable (or cached, or a local folder).")
    source = st.session_state["tr_model_source"]
    checkpoint = None
    if source == "timm":
        st.text_input("timm model name", key="tr_timm_name", placeholder="convnext_tiny",
                      help="Any name from timm.list_models(), e.g. vit_base_patch16_224, convnext_tiny, resnet50")
        checkpoint = st.text_input("Local weights (optional)", key="tr_checkpoint",
                                   placeholder="/models/convnext_tiny.safetensors",
                                   help="A state dict (.pt, .pth or .safetensors) when the hub is not reachable")
        checkpoint = user_path(checkpoint) or None  # relative: from where the app was started
    elif source == "hf":
        st.text_input("Hub id or local folder", key="tr_hf_name", placeholder="facebook/convnext-tiny-224",
                      help="e.g. google/vit-base-patch16-224, facebook/convnext-tiny-224, "
                           "openai/clip-vit-base-patch16, or a folder written by save_pretrained")
    model = training.model_name()
    family = family_of(model or DEFAULT_MODEL)
    if st.session_state.get("tr_hp_family") != family:
        training.prefill_hparams(family)
    hp_source = PAPER_HPARAMS[family].source
    st.caption(f":material/auto_awesome: {FAMILY_NAMES.get(family, family)} family: "
               f"hyperparameters prefilled ({hp_source}).")

    # --- method
    methods = [m for m in list_methods() if not given or method_kind(m) == "lp"]  # given: no fine-tuning
    if st.session_state.get("tr_method") not in methods:
        st.session_state["tr_method"] = GIVEN_INPUTS_METHOD if given else DEFAULT_METHOD
    method = st.selectbox("Method", methods, key="tr_method",
                          format_func=lambda m: f"{m} — {get_method(m).description.split(':')[0].split(',')[0]}",
                          help="turn+ is the recommended variant; turn is TURN exactly as published; "
                               "the others are the paper's baselines.")
    st.caption(get_method(method).description)
    kind = method_kind(method)
    if st.session_state.get("tr_rounds_for") != method:
        st.session_state["tr_rounds_for"] = method
        st.session_state["tr_fft_epochs"] = max(1, training.default_rounds(method))

    # --- device
    options = training.device_options()
    if st.session_state.get("tr_device") not in options:
        st.session_state["tr_device"] = next((d for d in options if d.startswith("cuda")), "cpu")
    device = st.selectbox("Device", list(options), format_func=options.get, key="tr_device",
                          help="Training runs in a separate worker process; it keeps going if you close the tab.")

    # --- main settings
    if st.session_state.get("tr_size_for") != spec.get("kind"):
        st.session_state["tr_size_for"] = spec.get("kind")
        st.session_state["tr_image_size"] = 64 if spec.get("kind") == "demo" else 224
    c1, c2 = st.columns(2)
    image_size = c1.number_input("Image size (px)", min_value=16, max_value=1024, step=16, key="tr_image_size",
                                 disabled="features" in given,  # no image is read for given features
                                 help="Images are resized to this square size. 64 px is plenty for the "
                                      "28 px demo images; pre-trained ViTs expect 224.")
    if family == "efficientnet" and image_size < 64:
        st.warning("Below 64 px EfficientNet-Lite0's features collapse (measured: near-constant features, "
                   "chance-level accuracy). Use 64 px or more.", icon=":material/warning:")
    st.session_state.setdefault("tr_batch", 128)
    batch = c2.select_slider("Batch size", BATCH_SIZES, key="tr_batch")
    st.session_state.setdefault("tr_lp_epochs", 20)
    lp_epochs = c1.number_input("LP epochs", min_value=1, max_value=500, step=1, key="tr_lp_epochs",
                                disabled=kind == "fft", help="Linear probing epochs (paper: 20)")
    fft_epochs = c2.number_input("FFT rounds" if kind == "turn" else "FFT epochs", min_value=1, max_value=100,
                                 step=1, key="tr_fft_epochs", disabled=kind == "lp",
                                 help="Each TURN round cleanses, then fine-tunes one epoch (paper: 4)")
    st.session_state.setdefault("tr_tau", 0.6)
    tau = st.slider("Clean threshold τ", 0.05, 0.95, step=0.05, key="tr_tau", disabled=kind != "turn",
                    help="A sample joins the clean set when its clean probability exceeds τ (paper: 0.6). "
                         "You can move it again on the Threshold page after the run.")
    st.session_state.setdefault("tr_seed", 0)
    seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="tr_seed")

    with st.expander(":material/settings: Optimizers and more"):
        st.caption(f"Prefilled for the {FAMILY_NAMES.get(family, family)} family ({hp_source}).")
        a, b, c = st.columns([1.2, 1, 1])
        a.selectbox("LP optimizer", OPTIMIZERS, key="tr_lp_opt")
        b.number_input("LP learning rate", min_value=1e-7, max_value=10.0, step=1e-4, format="%.1e", key="tr_lp_lr")
        c.number_input("LP weight decay", min_value=0.0, max_value=1.0, step=1e-5, format="%.1e", key="tr_lp_wd")
        a.selectbox("FFT optimizer", OPTIMIZERS, key="tr_fft_opt")
        b.number_input("FFT learning rate", min_value=1e-8, max_value=10.0, step=1e-5, format="%.1e", key="tr_fft_lr")
        c.number_input("FFT weight decay", min_value=0.0, max_value=1.0, step=1e-5, format="%.1e", key="tr_fft_wd")
        if st.button("Reset to the paper's settings", icon=":material/restart_alt:", key="tr_hp_reset"):
            training.prefill_hparams(family)
            st.rerun()
        st.session_state.setdefault("tr_freeze_bn", True)
        st.toggle("Freeze BatchNorm statistics while fine-tuning", key="tr_freeze_bn",
                  help="Keeps small-batch fine-tuning stable (measured on the demo)")
        st.session_state.setdefault("tr_projections", ["tsne"])
        st.multiselect("Embedding projections", list(PROJECTIONS), format_func=PROJECTIONS.get,
                       key="tr_projections", help="Computed at the end of the run for the Embeddings page")
        st.session_state.setdefault("tr_projection_split", "train")
        st.radio("Projected samples", ["train", "test"], key="tr_projection_split", horizontal=True,
                 format_func={"train": "Training set (clean probabilities, flagged marks)",
                              "test": "Test set (as in the paper's Figure 2)"}.get,
                 help="Which split the Embeddings page maps: up to 1,000 samples of 10 classes")

    problems = training.start_problems(source, model, checkpoint, st.session_state.get("tr_projections"))
    for p in problems:
        st.warning(p, icon=":material/warning:")

    hp = PAPER_HPARAMS[family]

    def override(value, default):
        return None if value == default else value

    processes = len(training.gpu_devices()) if device == "all" else 1
    try:
        config = RunConfig(
            dataset=spec, noise=noise, model=model, checkpoint=checkpoint, method=method,
            image_size=int(image_size), batch_size=int(batch), lp_epochs=int(lp_epochs),
            fft_epochs=int(fft_epochs), tau=float(tau), seed=int(seed),
            lp_optimizer=override(st.session_state["tr_lp_opt"], hp.lp.optimizer),
            lp_lr=override(float(st.session_state["tr_lp_lr"]), hp.lp.lr),
            lp_weight_decay=override(float(st.session_state["tr_lp_wd"]), hp.lp.weight_decay),
            fft_optimizer=override(st.session_state["tr_fft_opt"], hp.fft.optimizer),
            fft_lr=override(float(st.session_state["tr_fft_lr"]), hp.fft.lr),
            fft_weight_decay=override(float(st.session_state["tr_fft_wd"]), hp.fft.weight_decay),
            freeze_bn_stats=bool(st.session_state["tr_freeze_bn"]),
            device="cuda" if device == "all" else device, num_processes=processes,
            projection_methods=list(st.session_state["tr_projections"]),
            projection_split=st.session_state["tr_projection_split"], **given,
        )
    except ValueError as exc:
        config, config_error = None, exc
    else:
        config_error = None
    # given features or probabilities load no image model: a linear probe on them takes seconds
    estimate = None if given else run_estimate.estimate_panel(None if problems else config, BATCH_SIZES)

    if st.button("Start", icon=":material/play_arrow:", type="primary", width="stretch", key="tr_start",
                 disabled=bool(problems)):
        if config is None:
            ui.show_error(config_error)
            return
        folder = training.start_run(config, processes)
        if folder is not None:
            run_estimate.save_estimate(folder, estimate)
            st.toast(f"Started {folder.name}", icon=":material/rocket_launch:")
            st.rerun()


# ---------------------------------------------------------------------------- the page

ui.page_header("Train", ":material/model_training:",
               "Pick a pre-trained model and a method; the run trains in the background and you can "
               "follow it here, close the tab, and come back.")

folder = current_run()
left, right = st.columns([2, 3], gap="large")
with left:
    settings_form()
with right:
    if folder is None:
        ui.empty_state("No run yet. The settings on the left are ready for the Fashion-MNIST demo with 40% "
                       "symmetric noise: press Start.", icon=":material/rocket_launch:")
    else:
        progress_panel(folder)
