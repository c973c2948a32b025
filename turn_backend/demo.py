"""The embedded default: Fashion-MNIST (shipped subset), symmetric 40% noise, EfficientNet-Lite0.

Sized so that TURN and the baselines LP-GCE and FFT-CE together finish in about five
minutes on 2 CPU cores (64 px inputs; the images are 28 px, so little is lost).
"""

from __future__ import annotations

from turn_backend.config import RunConfig

DEMO_METHODS = ("turn", "lp-gce", "fft-ce")
DEMO_N_TRAIN = 3000
DEMO_N_TEST = 1000
DEMO_IMAGE_SIZE = 64
DEMO_NOISE = {"kind": "symmetric", "rate": 0.4, "seed": 0}


def demo_config(method: str = "turn+", n_train: int | None = None, n_test: int | None = None,
                image_size: int | None = None, device: str = "auto") -> RunConfig:
    return RunConfig(
        dataset={"kind": "demo", "n_train": n_train or DEMO_N_TRAIN, "n_test": n_test or DEMO_N_TEST},
        noise=dict(DEMO_NOISE),
        model="efficientnet_lite0",
        method=method,
        image_size=image_size or DEMO_IMAGE_SIZE,
        device=device,
    )
