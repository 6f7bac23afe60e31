"""The graph's schema (docs/FORMAT.md, "Graph"): the operations a version 2.1 file's ``graph``
may hold, and the check of a graph against the file's tensors and input size. Tracing a model
into a graph, and running one in PyTorch, is :mod:`deepcomp.graph`'s.

Each node is ``[op, inputs, attributes]``, ``inputs`` the indices of earlier nodes; node 0 is
the input, the last node the output. Plain Python: no torch.
"""
from __future__ import annotations

from ..errors import UsageError

__all__ = ["OPS", "check_graph"]

# Each operation and the number of inputs it takes.
OPS = {"conv2d": 1, "linear": 1, "batchnorm": 1, "relu": 1, "add": 2, "maxpool2d": 1,
       "avgpool2d": 1, "meanpool": 1, "flatten": 1, "subsample": 1, "pad": 1}


def check_graph(graph, shapes: dict, input_size: list, where: str) -> list[list[int]]:
    """Check a graph against the tensors' ``shapes`` and the per-sample ``input_size``; return
    every node's output shape. Raises :class:`UsageError` naming the first fault."""
    def bad(i, why):
        raise UsageError(f"{where}: node {i}: {why}")
    if not isinstance(graph, list) or not graph or graph[0] != ["input", [], {}]:
        raise UsageError(f"{where}: a graph is a list of nodes starting with the input")
    out = [list(input_size)]
    for i, node in enumerate(graph[1:], 1):
        if not (isinstance(node, list) and len(node) == 3 and node[0] in OPS
                and isinstance(node[1], list) and len(node[1]) == OPS[node[0]]
                and all(isinstance(j, int) and not isinstance(j, bool) and 0 <= j < i
                        for j in node[1]) and isinstance(node[2], dict)):
            bad(i, f"not an operation [op, inputs, attributes] of {', '.join(OPS)}")
        op, ins, a = node
        out.append(_shape(i, op, [out[j] for j in ins], a, shapes, bad))
    return out


def _ints(a: dict, key: str, n: int, lo: int, bad, i) -> list[int]:
    v = a.get(key)
    if not (isinstance(v, list) and len(v) == n and all(isinstance(x, int) and
                                                        not isinstance(x, bool) and
                                                        lo <= x <= 1 << 16 for x in v)):
        bad(i, f"{key} must be {n} integers of {lo} to 65536")
    return v


def _tensor(a, key, shapes, bad, i, optional=False):
    name = a.get(key)
    if name is None and optional:
        return None
    if not isinstance(name, str) or name not in shapes:
        bad(i, f"{key} {name!r} is not a tensor of the file")
    return list(shapes[name])


def _shape(i, op, ins, a, shapes, bad) -> list[int]:
    x = ins[0]
    if op in ("conv2d", "maxpool2d", "avgpool2d", "meanpool", "subsample", "pad") and len(x) != 3:
        bad(i, f"{op} takes [C, H, W] inputs, got {x}")
    if op == "conv2d":
        w = _tensor(a, "weight", shapes, bad, i)
        b = _tensor(a, "bias", shapes, bad, i, optional=True)
        s, p = _ints(a, "stride", 2, 1, bad, i), _ints(a, "padding", 2, 0, bad, i)
        if _ints(a, "dilation", 2, 1, bad, i) != [1, 1]:
            bad(i, "dilation is not run")
        g = a.get("groups")
        if not (isinstance(g, int) and g >= 1 and len(w) == 4 and w[0] % g == 0
                and x[0] == w[1] * g and (b is None or b == [w[0]])):
            bad(i, f"weight {w}, groups {g!r} and bias do not fit the input {x}")
        h = (x[1] + 2 * p[0] - w[2]) // s[0] + 1
        wd = (x[2] + 2 * p[1] - w[3]) // s[1] + 1
        if h < 1 or wd < 1:
            bad(i, "the kernel is larger than the padded input")
        return [w[0], h, wd]
    if op == "linear":
        w = _tensor(a, "weight", shapes, bad, i)
        b = _tensor(a, "bias", shapes, bad, i, optional=True)
        if len(x) != 1 or len(w) != 2 or w[1] != x[0] or (b is not None and b != [w[0]]):
            bad(i, f"weight {w} does not fit the input {x}")
        return [w[0]]
    if op == "batchnorm":
        for k in ("weight", "bias", "mean", "var"):
            if _tensor(a, k, shapes, bad, i) != [x[0]]:
                bad(i, f"{k} does not have the input's {x[0]} channels")
        if not isinstance(a.get("eps"), (int, float)) or not 0 <= a["eps"] < 1:
            bad(i, "eps must be a number in [0, 1)")
        return list(x)
    if op == "add":
        if ins[0] != ins[1]:
            bad(i, f"add of shapes {ins[0]} and {ins[1]}")
        return list(x)
    if op in ("maxpool2d", "avgpool2d"):
        k, s = _ints(a, "kernel", 2, 1, bad, i), _ints(a, "stride", 2, 1, bad, i)
        p = _ints(a, "padding", 2, 0, bad, i)
        if p[0] * 2 > k[0] or p[1] * 2 > k[1]:
            bad(i, "padding larger than half the kernel")
        h, wd = (x[1] + 2 * p[0] - k[0]) // s[0] + 1, (x[2] + 2 * p[1] - k[1]) // s[1] + 1
        if h < 1 or wd < 1:
            bad(i, "the kernel is larger than the padded input")
        return [x[0], h, wd]
    if op == "meanpool":
        return [x[0], 1, 1]
    if op == "flatten":
        n = 1
        for d in x:
            n *= d
        return [n]
    if op == "subsample":
        s = _ints(a, "stride", 2, 1, bad, i)
        return [x[0], -(-x[1] // s[0]), -(-x[2] // s[1])]
    if op == "pad":
        c = _ints(a, "channels", 2, 0, bad, i)
        return [x[0] + c[0] + c[1], x[1], x[2]]
    return list(x)                                  # relu
