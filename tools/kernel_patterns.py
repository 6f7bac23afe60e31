"""How many bytes a .dc file's gap streams would take as one Huffman symbol per 3x3 kernel mask.

    python tools/kernel_patterns.py models/resnet20-cifar10.dc

For each 3x3 convolution: the bytes of its relative-index (gap) stream in the file, against the
entropy of its kernel masks (each mask one of 512 symbols) plus about 9 bits a symbol that
occurs for the code table: a lower bound for that layout (docs/PRUNING.md, "The 35x goal").
"""
import argparse
import collections
import math

import torch

from deepcomp.loading import read_dc


def _entropy_bits(counts: collections.Counter) -> float:
    n = sum(counts.values())
    return -sum(c * math.log2(c / n) for c in counts.values())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dc", help="a .dc file")
    a = p.parse_args()
    sf = read_dc(a.dc)
    tensors = sf.history[-1]["sizes"]["tensors"]
    total_gaps = total_patterns = 0.0
    for name, mask in sf.masks.items():
        if mask.dim() != 4 or tuple(mask.shape[-2:]) != (3, 3):
            continue
        t = tensors[name]
        gaps = t["index_bits"] * t["entries"] / 8
        codes = (mask.reshape(-1, 9).int() * 2 ** torch.arange(9)).sum(1).tolist()
        counts = collections.Counter(codes)
        patterns = (_entropy_bits(counts) + 9 * len(counts)) / 8
        total_gaps, total_patterns = total_gaps + gaps, total_patterns + patterns
        print(f"{name:26s} kernels {len(codes):5d}  empty {counts[0] / len(codes):6.1%}  "
              f"gaps {gaps:7.0f} B  patterns {patterns:7.0f} B")
    print(f"3x3 convolutions: gaps {total_gaps:,.0f} bytes, kernel patterns {total_patterns:,.0f} bytes")


if __name__ == "__main__":
    main()
