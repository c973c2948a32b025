"""The embedded default: Fashion-MNIST (shipped subset), symmetric 40% noise, EfficientNet-Lite0.

`turn demo` runs TURN+ (recommended), TURN as published and the baselines LP-GCE and FFT-CE
on 2,000 train / 1,000 test images at 48 px, sized to finish within 3 minutes on 2 quiet
CPU cores (README). The images are 28 px, so 48 px upscales them less than the earlier
64 px did, at 0.56x the compute per image. All four runs read one feature cache: the frozen
features are extracted by the first run and reused by the others.
"""

from __future__ import annotations

from turn_backend.config import RunConfig

DEMO_METHODS = ("turn+", "turn", "lp-gce", "fft-ce")
DEMO_N_TRAIN = 2000
DEMO_N_TEST = 1000
DEMO_IMAGE_SIZE = 48
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
