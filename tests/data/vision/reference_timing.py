#!/usr/bin/env python3
"""Single-thread timings of scikit-image SSIM and OpenCV matchTemplate on the
images smoke's benches/vision.rs uses (fixtures tiled to 1920x1080).

benches/vision.rs runs this itself, side by side with smoke's own timings, and
prints the ratios. By hand:
    pip install scikit-image opencv-python-headless pillow threadpoolctl
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 taskset -c 0 python3 reference_timing.py
Lines starting with RESULT are read by the bench: RESULT <name> <cpu median ms> <value>.
"""
import os
import time

import cv2
import numpy as np
import scipy
import skimage
from PIL import Image
from skimage.metrics import structural_similarity

HERE = os.path.dirname(os.path.abspath(__file__))
cv2.setNumThreads(1)


def tiled(name):
    g = np.asarray(Image.open(os.path.join(HERE, name)).convert("RGB").convert("L"))
    ys = np.arange(1080) % g.shape[0]
    xs = np.arange(1920) % g.shape[1]
    return np.ascontiguousarray(g[ys][:, xs])


def bench(key, label, runs, f):
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
    return out, cpu[runs // 2] * 1e3


try:
    from threadpoolctl import threadpool_info
    for pool in threadpool_info():
        print(f"# {pool.get('internal_api')} {pool.get('version')} {pool.get('architecture')} threads={pool.get('num_threads')}")
except ImportError:
    print("# threadpoolctl not installed: BLAS kernel unknown")
print(f"# scikit-image {skimage.__version__}, scipy {scipy.__version__}, numpy {np.__version__}, opencv {cv2.__version__}")

a, b = tiled("screen_base.png"), tiled("screen_moved.png")
s, t = bench("ssim", "skimage ssim gaussian 1920x1080", 10, lambda: structural_similarity(
    a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255))
print(f"  score {s:.6f}")
print(f"RESULT ssim_gaussian {t:.3f} {s:.6f}")
s, t = bench("box", "skimage ssim box7 1920x1080", 10, lambda: structural_similarity(
    a, b, win_size=7, use_sample_covariance=False, data_range=255))
print(f"  score {s:.6f}")
print(f"RESULT ssim_box7 {t:.3f} {s:.6f}")

# Template: a 200x120 patch of the moved screen, searched in the base screen.
needle = np.ascontiguousarray(b[500:620, 600:800])
res, t = bench("t200", "opencv matchTemplate CCOEFF_NORMED 200x120", 10,
               lambda: cv2.matchTemplate(a, needle, cv2.TM_CCOEFF_NORMED))
_, best, _, loc = cv2.minMaxLoc(res)
print(f"  best {best:.6f} at {loc}")
print(f"RESULT template_200x120 {t:.3f} {best:.6f}")

needle = np.ascontiguousarray(b[525:564, 740:798])
res, t = bench("t58", "opencv matchTemplate CCOEFF_NORMED 58x39", 10,
               lambda: cv2.matchTemplate(a, needle, cv2.TM_CCOEFF_NORMED))
_, best, _, loc = cv2.minMaxLoc(res)
print(f"  best {best:.6f} at {loc}")
print(f"RESULT template_58x39 {t:.3f} {best:.6f}")
