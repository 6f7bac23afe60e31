"""Time and inertia of scikit-learn's KMeans against deepcomp's one-dimensional k-means.

Both start from the same centroids (deepcomp.quantize.init_centroids) and run Lloyd's algorithm;
scikit-learn with n_init=1 and its defaults (max_iter=300, tol=1e-4), deepcomp once with the
same stopping rule and once until no assignment changes (its default). Data: a synthetic layer
of 2.4 million weights (ResNet-50's largest, layer4 conv2: 512x512x3x3 = 2,359,296) drawn from a
Laplace/normal mix, and real layers of the pretrained ResNet-20.

    .venv/bin/python tools/bench_kmeans.py --resnet20 /work/shared/models/resnet20-12fca82f.th

prints a markdown table (docs/QUANTIZE.md holds the one measured there).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from deepcomp.quantize import init_centroids, kmeans_1d  # noqa: E402


def synthetic_layer(n: int, seed: int = 0) -> np.ndarray:
    """Weights shaped like a trained conv layer: a sharp Laplace peak plus a wider normal."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.7, rng.laplace(0, 0.01, n), rng.normal(0, 0.03, n))


def resnet20_layers(path: str, names: list[str]) -> dict[str, np.ndarray]:
    from deepcomp.loading import load_stage
    sf = load_stage(path, model="resnet20")
    return {n: sf.state_dict[n].double().numpy().ravel() for n in names}


def run_sklearn(x: np.ndarray, start: np.ndarray, max_iter: int, tol: float):
    from sklearn.cluster import KMeans
    t = time.perf_counter()
    km = KMeans(len(start), init=start[:, None], n_init=1, max_iter=max_iter, tol=tol,
                algorithm="lloyd").fit(x[:, None])
    return time.perf_counter() - t, float(km.inertia_), int(km.n_iter_), len(np.unique(km.labels_))


def run_1d(x: np.ndarray, k: int, init: str, max_iter: int, tol: float):
    info = {}
    t = time.perf_counter()
    c, _, inertia = kmeans_1d(x, k, init, seed=0, max_iter=max_iter, tol=tol, info=info)
    return time.perf_counter() - t, inertia, info["iterations"], len(c)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2_359_296, help="weights in the synthetic layer")
    p.add_argument("--k", type=int, default=256, help="clusters (8 bits)")
    p.add_argument("--inits", default="linear,density,forgy")
    p.add_argument("--resnet20", help="pretrained ResNet-20 checkpoint: also bench its layers")
    p.add_argument("--layers", default="conv1.weight,layer3.2.conv2.weight,linear.weight")
    p.add_argument("--no-sklearn", action="store_true", help="time only the 1-D method")
    a = p.parse_args(argv)

    sets = {f"synthetic {a.n:,}": synthetic_layer(a.n)}
    if a.resnet20:
        for name, x in resnet20_layers(a.resnet20, a.layers.split(",")).items():
            sets[f"resnet20 {name} ({x.size:,})"] = x
    print(f"k = {a.k} (or 2**5 = 32 for a linear layer); time in seconds; inertia = sum of squared "
          "errors; iters = Lloyd iterations; used = non-empty clusters\n")
    print("| layer | init | method | seconds | iters | used | inertia |")
    print("|---|---|---|---:|---:|---:|---:|")
    for label, x in sets.items():
        k = 32 if "linear.weight" in label else a.k
        for init in a.inits.split(","):
            start = init_centroids(x, k, init, seed=0)
            rows = []
            if not a.no_sklearn:
                rows.append(("scikit-learn KMeans (max_iter 300, tol 1e-4)",
                             run_sklearn(x, start, 300, 1e-4)))
            rows.append(("1-D sorted (max_iter 300, tol 1e-4)", run_1d(x, k, init, 300, 1e-4)))
            rows.append(("1-D sorted, to convergence (default)", run_1d(x, k, init, 100_000, 0.0)))
            for method, (sec, inertia, iters, used) in rows:
                print(f"| {label} | {init} | {method} | {sec:.2f} | {iters} | {used} | "
                      f"{inertia:.6g} |", flush=True)


if __name__ == "__main__":
    main()
