#!/usr/bin/env python3
"""Recompute ssim_reference.json from the fixture PNGs with scikit-image.

Usage: pip install scikit-image pillow; python3 make_reference.py
Images are read with PIL and converted with convert("L") (BT.601, the same luma
as smoke's Frame::to_luma); every score is skimage.metrics.structural_similarity.
"""
import json
import os

import numpy as np
import skimage
from PIL import Image
from skimage.metrics import structural_similarity

HERE = os.path.dirname(os.path.abspath(__file__))
PAIRS = [
    ("identical", "screen_base.png", "screen_base_again.png"),
    ("one_char", "screen_base.png", "screen_one_char.png"),
    ("colour", "screen_base.png", "screen_colour.png"),
    ("moved_20px", "screen_base.png", "screen_moved.png"),
]
WINDOWS = {
    # name: (kwargs, smoke window description)
    "gaussian": (dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False), {"gaussian": 1.5}),
    "gaussian_sample": (dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=True), {"gaussian": 1.5}),
    "box7": (dict(gaussian_weights=False, win_size=7, use_sample_covariance=False), {"box": 7}),
    "box7_sample": (dict(gaussian_weights=False, win_size=7, use_sample_covariance=True), {"box": 7}),
}
REGIONS = [None, [40, 60, 300, 80], [211, 69, 51, 37], [226, 86, 11, 11]]


def luma(name):
    return np.asarray(Image.open(os.path.join(HERE, name)).convert("RGB").convert("L"))


def samples(s):
    h, w = s.shape
    pts = {(0, 0), (1, 2), (5, 5), (w - 1, h - 1), (w - 1, 0), (w // 2, h // 2), (w // 3, h // 4)}
    y, x = np.unravel_index(np.argmin(s), s.shape)
    pts.add((int(x), int(y)))
    return [[x, y, float(s[y, x])] for x, y in sorted(pts)]


cases = []
for pair, fa, fb in PAIRS:
    a, b = luma(fa), luma(fb)
    for wname, (kwargs, window) in WINDOWS.items():
        for region in REGIONS:
            if region is None:
                ca, cb = a, b
            else:
                x, y, w, h = region
                ca, cb = a[y:y + h, x:x + w], b[y:y + h, x:x + w]
            score, s = structural_similarity(ca, cb, data_range=255, full=True, **kwargs)
            cases.append({
                "pair": pair, "a": fa, "b": fb, "window": window,
                "sample_covariance": kwargs["use_sample_covariance"],
                "region": region, "score": float(score), "map_samples": samples(s),
            })

# Colour: each RGB channel on its own (smoke's colour mode takes the lowest;
# structural_similarity with channel_axis=2 would return their mean).
COLOUR_PAIRS = [
    ("button_red_green", "button_red.png", "button_green.png"),
    ("colour", "screen_base.png", "screen_colour.png"),
]
for pair, fa, fb in COLOUR_PAIRS:
    a = np.asarray(Image.open(os.path.join(HERE, fa)).convert("RGB"))
    b = np.asarray(Image.open(os.path.join(HERE, fb)).convert("RGB"))
    for region in [None, [120, 140, 200, 60]]:
        channels = []
        for c in range(3):
            ca, cb = a[:, :, c], b[:, :, c]
            if region is not None:
                x, y, w, h = region
                ca, cb = ca[y:y + h, x:x + w], cb[y:y + h, x:x + w]
            channels.append(float(structural_similarity(
                ca, cb, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)))
        ga, gb = luma(fa), luma(fb)
        if region is not None:
            x, y, w, h = region
            ga, gb = ga[y:y + h, x:x + w], gb[y:y + h, x:x + w]
        gray = float(structural_similarity(
            ga, gb, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False))
        cases.append({"pair": pair, "a": fa, "b": fb, "window": {"gaussian": 1.5}, "sample_covariance": False,
                      "region": region, "channels": channels, "gray": gray})

with open(os.path.join(HERE, "ssim_reference.json"), "w") as f:
    json.dump({"generator": f"scikit-image {skimage.__version__}", "cases": cases}, f, indent=1)
print(f"{len(cases)} cases")
for c in cases:
    if "channels" in c:
        print(c["pair"], c["region"], "channels", [round(v, 6) for v in c["channels"]], "gray", round(c["gray"], 6))
    elif c["region"] is None:
        print(c["pair"], c["window"], c["sample_covariance"], round(c["score"], 6))
