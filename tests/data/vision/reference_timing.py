#!/usr/bin/env python3
"""Single-thread timings of scikit-image SSIM and OpenCV matchTemplate on the
images smoke's benches/vision.rs uses (fixtures tiled to 1920x1080).

Usage: pip install scikit-image opencv-python-headless pillow
       OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 taskset -c 0 python3 reference_timing.py
"""
import os
import time

import cv2
import numpy as np
from PIL import Image
from skimage.metrics import structural_similarity

HERE = os.path.dirname(os.path.abspath(__file__))
cv2.setNumThreads(1)


def tiled(name):
    g = np.asarray(Image.open(os.path.join(HERE, name)).convert("RGB").convert("L"))
    ys = np.arange(1080) % g.shape[0]
    xs = np.arange(1920) % g.shape[1]
    return np.ascontiguousarray(g[ys][:, xs])


def bench(label, runs, f):
    wall, cpu = [], []
    out = None
    for _ in range(runs):
        t, c = time.perf_counter(), time.thread_time()
        out = f()
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)
    wall.sort(); cpu.sort()
    print(f"{label:<44} cpu median {cpu[runs // 2] * 1e3:8.2f} ms min {cpu[0] * 1e3:8.2f} ms"
          f" | wall median {wall[runs // 2] * 1e3:8.2f} ms")
    return out


a, b = tiled("screen_base.png"), tiled("screen_moved.png")
s = bench("skimage ssim gaussian 1920x1080", 10, lambda: structural_similarity(
    a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255))
print(f"  score {s:.6f}")
s = bench("skimage ssim box7 1920x1080", 10, lambda: structural_similarity(
    a, b, win_size=7, use_sample_covariance=False, data_range=255))
print(f"  score {s:.6f}")

# Template: a 200x120 patch of the moved screen, searched in the base screen.
needle = np.ascontiguousarray(b[500:620, 600:800])
res = bench("opencv matchTemplate CCOEFF_NORMED 200x120", 10,
            lambda: cv2.matchTemplate(a, needle, cv2.TM_CCOEFF_NORMED))
_, best, _, loc = cv2.minMaxLoc(res)
print(f"  best {best:.6f} at {loc}")

needle = np.ascontiguousarray(b[525:564, 740:798])
res = bench("opencv matchTemplate CCOEFF_NORMED 58x39", 10,
            lambda: cv2.matchTemplate(a, needle, cv2.TM_CCOEFF_NORMED))
_, best, _, loc = cv2.minMaxLoc(res)
print(f"  best {best:.6f} at {loc}")
