"""Compress your own model inside your own training loop, with deepcomp's pieces.

    python examples/own_loop.py [OUT_DIR]

Your model, your data pipeline, your optimizer (Adam here): deepcomp computes the masks, holds
the pruned weights at exactly zero through your optimizer, ramps the sparsity up while you
train, turns the kept weights into trainable shared centroids, and writes the .dc file. The data
are scikit-learn's 8x8 digits, so this runs anywhere in seconds.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import deepcomp

out_dir = sys.argv[1] if len(sys.argv) > 1 else "."
torch.manual_seed(0)

# --- your model and data -------------------------------------------------------------------
digits = load_digits()
x = torch.tensor(digits.images, dtype=torch.float32).reshape(-1, 64) / 16
y = torch.tensor(digits.target)
x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]
model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                      nn.Linear(128, 10))


def train(model, optimizer, epochs, after_step=None):
    for _ in range(epochs):
        for i in torch.randperm(len(y_train)).split(64):
            loss = F.cross_entropy(model(x_train[i]), y_train[i])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if after_step:
                after_step()


def accuracy(model):
    with torch.no_grad():
        return 100 * (model(x_test).argmax(1) == y_test).float().mean().item()


optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
train(model, optimizer, 15)
print(f"dense: {accuracy(model):.1f}% top-1")

# --- 1. gradual pruning to 90% while training (Zhu & Gupta 2017), masks held exactly ----------
steps = 20 * len(torch.arange(len(y_train)).split(64))
schedule = deepcomp.GradualSchedule(model, total_steps=steps, method="lamp", sparsity=0.9,
                                    every=20, optimizer=optimizer)
train(model, optimizer, 20, after_step=schedule.step)
print(f"pruned to {100 * schedule.sparsity:.1f}% sparsity: {accuracy(model):.1f}% top-1")
zeros = all(bool((p[~m] == 0).all()) for p, m in
            zip((dict(model.named_parameters())[n] for n in schedule.masks),
                schedule.masks.values()))
assert zeros, "a pruned weight moved"

# --- 2. weight sharing: 4-bit codebooks per layer, the centroids trained in your loop --------
codebooks = deepcomp.share_weights(model, bits=4)
train(model, torch.optim.Adam(codebooks.parameters(), lr=1e-4), 3)
codebooks.finalize()
print(f"4-bit shared weights: {accuracy(model):.1f}% top-1")

# --- 3. the .dc file: sparse indices and Huffman-coded cluster indices ------------------------
path = os.path.join(out_dir, "own_loop.dc")
record = deepcomp.encode(model, path)
dense = 4 * sum(p.numel() for p in model.parameters())
print(f"{path}: {record['sizes']['bytes']:,} bytes, {dense / record['sizes']['bytes']:.1f}x "
      f"smaller than the {dense:,} float32 bytes")
restored = deepcomp.load(path, model=model)
assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(),
                                             model.state_dict().values()))
print(f"restored from the file, weight for weight: {accuracy(restored):.1f}% top-1")
assert np.isclose(accuracy(restored), accuracy(model))
# Expected output (2026-12-04, torch 2.13 CPU; the last 397 digits, other writers than the
# first 1,400, are the test set):
#   dense: 91.2% top-1
#   pruned to 90.0% sparsity: 90.4% top-1
#   4-bit shared weights: 90.4% top-1
#   ./own_loop.dc: 7,008 bytes, 29.0x smaller than the 203,304 float32 bytes
#   restored from the file, weight for weight: 90.4% top-1
