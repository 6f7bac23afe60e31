"""The network's computation as a small graph a C runtime can run (docs/FORMAT.md, "Graph").

A ``.dc`` file names an architecture that only Python can build; with a graph (``encode
--graph``) it also says what to compute, in a handful of operations, so ``c/dcrun`` can run the
compressed model without PyTorch and without expanding its weights. The graph is traced with
``torch.fx`` and written as a list of nodes in evaluation order; node 0 is the input, each
other node is ``[op, inputs, attributes]`` with ``inputs`` the indices of earlier nodes and
``attributes`` an object; the last node is the output. Operations (``deepcomp.dc.graph.OPS``,
which also checks a graph against a file's tensors):

    conv2d        weight, bias (a tensor name or null), stride [h, w], padding [h, w],
                  dilation [h, w], groups
    linear        weight, bias (or null)
    batchnorm     weight, bias, mean, var (tensor names), eps (evaluation mode)
    relu
    add           two inputs, same shape
    maxpool2d     kernel [h, w], stride [h, w], padding [h, w]
    avgpool2d     kernel [h, w], stride [h, w], padding [h, w] (zeros counted, as PyTorch's
                  default count_include_pad)
    meanpool      the mean over all positions of each channel (adaptive average pooling to 1x1)
    flatten       from dimension 1: [C, H, W] to [C * H * W]
    subsample     stride [h, w]: every stride-th row and column from the first (x[:, :, ::h, ::w])
    pad           [c0, c1]: zero channels added before and after (F.pad of the channel dimension)

Shapes are per sample (the batch dimension is implicit). A model that uses anything else, or
these in a way the runtime does not run (dilation, a pad of spatial dimensions, ...), is a
one-line :class:`deepcomp.errors.UsageError` when a graph is asked for, never a wrong answer.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .dc.graph import OPS, check_graph
from .errors import UsageError

__all__ = ["trace_graph", "run_graph"]

def _pair(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


class _Tracer:
    def __init__(self, model: nn.Module):
        self.model = model
        self.modules = dict(model.named_modules())
        self.params = {id(p): n for n, p in model.named_parameters()}
        self.buffers = {id(b): n for n, b in model.named_buffers()}
        self.nodes: list = []
        self.index: dict = {}

    def name_of(self, t) -> str | None:
        if t is None:
            return None
        return self.params.get(id(t)) or self.buffers.get(id(t))

    def fail(self, what: str):
        raise UsageError(f"--graph: {type(self.model).__name__} uses {what}, which the C runtime "
                         f"does not run (it runs {', '.join(OPS)})")

    def add(self, node, op: str, inputs, **attrs):
        if any(self.index.get(i) is None for i in inputs):
            self.fail(f"{op} of something other than the tensors it computes")
        self.nodes.append([op, [self.index[i] for i in inputs], attrs])
        self.index[node] = len(self.nodes) - 1

    def alias(self, node, of):
        if self.index.get(of) is None:
            self.fail("an identity of something other than the tensors it computes")
        self.index[node] = self.index[of]


def _module(t: _Tracer, node, mod: nn.Module, arg):
    if isinstance(mod, nn.Conv2d):
        if mod.padding_mode != "zeros" or isinstance(mod.padding, str):
            t.fail(f"Conv2d with padding {mod.padding!r} ({mod.padding_mode})")
        if _pair(mod.dilation) != [1, 1]:
            t.fail("a dilated Conv2d")
        t.add(node, "conv2d", [arg], weight=t.name_of(mod.weight), bias=t.name_of(mod.bias),
              stride=_pair(mod.stride), padding=_pair(mod.padding), dilation=[1, 1],
              groups=int(mod.groups))
    elif isinstance(mod, nn.Linear):
        t.add(node, "linear", [arg], weight=t.name_of(mod.weight), bias=t.name_of(mod.bias))
    elif isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if not (mod.affine and mod.track_running_stats):
            t.fail("a BatchNorm without affine parameters or running statistics")
        t.add(node, "batchnorm", [arg], weight=t.name_of(mod.weight), bias=t.name_of(mod.bias),
              mean=t.name_of(mod.running_mean), var=t.name_of(mod.running_var),
              eps=float(mod.eps))
    elif isinstance(mod, nn.ReLU):
        t.add(node, "relu", [arg])
    elif isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
        _pool(t, node, "maxpool2d" if isinstance(mod, nn.MaxPool2d) else "avgpool2d", arg,
              mod.kernel_size, mod.stride, mod.padding, getattr(mod, "dilation", 1),
              mod.ceil_mode, getattr(mod, "count_include_pad", True))
    elif isinstance(mod, nn.AdaptiveAvgPool2d):
        if _pair(mod.output_size) != [1, 1]:
            t.fail("adaptive average pooling to more than 1x1")
        t.add(node, "meanpool", [arg])
    elif isinstance(mod, nn.Flatten):
        if mod.start_dim != 1 or mod.end_dim != -1:
            t.fail("a Flatten of other dimensions than 1 to the last")
        t.add(node, "flatten", [arg])
    elif isinstance(mod, (nn.Identity, nn.Dropout)):
        t.alias(node, arg)
    else:
        t.fail(f"the module {type(mod).__name__}")


def _pool(t: _Tracer, node, op, arg, kernel, stride, padding, dilation, ceil_mode,
          count_include_pad):
    if ceil_mode or _pair(dilation) != [1, 1] or not count_include_pad:
        t.fail(f"{op} with ceil_mode, dilation or count_include_pad=False")
    t.add(node, op, [arg], kernel=_pair(kernel), stride=_pair(stride if stride else kernel),
          padding=_pair(padding))


def _getitem(t: _Tracer, node, arg, index):
    """``x[:, :, ::h, ::w]``: a subsample; any other indexing is not run."""
    if not (isinstance(index, tuple) and len(index) == 4
            and all(isinstance(s, slice) and s.start in (None, 0) and s.stop is None
                    for s in index) and index[0].step in (None, 1) and index[1].step in (None, 1)):
        t.fail(f"indexing {index!r}")
    t.add(node, "subsample", [arg], stride=[index[2].step or 1, index[3].step or 1])


def _function(t: _Tracer, node, fn, args, kwargs):
    a0 = args[0] if args else None
    if fn in (F.relu, torch.relu) or (fn is F.relu and not kwargs.get("inplace")):
        t.add(node, "relu", [a0])
    elif fn in (operator.add, torch.add) and len(args) == 2 and not kwargs:
        t.add(node, "add", list(args))
    elif fn in (F.max_pool2d, F.avg_pool2d):
        names = ("kernel_size", "stride", "padding", "dilation" if fn is F.max_pool2d else
                 "ceil_mode", "ceil_mode" if fn is F.max_pool2d else "count_include_pad")
        p = dict(zip(names, args[1:]), **kwargs)
        op = "maxpool2d" if fn is F.max_pool2d else "avgpool2d"
        _pool(t, node, op, a0, p["kernel_size"], p.get("stride"), p.get("padding", 0),
              p.get("dilation", 1), p.get("ceil_mode", False), p.get("count_include_pad", True))
    elif fn is F.adaptive_avg_pool2d:
        size = args[1] if len(args) > 1 else kwargs.get("output_size")
        if _pair(size) != [1, 1]:
            t.fail("adaptive average pooling to more than 1x1")
        t.add(node, "meanpool", [a0])
    elif fn is torch.flatten:
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        if start != 1 or (len(args) > 2 and args[2] != -1):
            t.fail("torch.flatten of other dimensions than 1 to the last")
        t.add(node, "flatten", [a0])
    elif fn is F.pad:
        pads = list(args[1] if len(args) > 1 else kwargs["pad"])
        if len(pads) != 6 or pads[:4] != [0, 0, 0, 0] or kwargs.get("value") not in (None, 0) \
                or kwargs.get("mode", "constant") != "constant":
            t.fail(f"F.pad({pads}) (only zero channels are padded)")
        t.add(node, "pad", [a0], channels=[int(pads[4]), int(pads[5])])
    elif fn is operator.getitem:
        _getitem(t, node, a0, args[1])
    else:
        t.fail(f"the function {getattr(fn, '__name__', fn)}")


def _method(t: _Tracer, node, name, args, kwargs):
    a0 = args[0]
    if name == "relu":
        t.add(node, "relu", [a0])
    elif name == "flatten" and (args[1:] in ((1,), (1, -1)) or kwargs == {"start_dim": 1}):
        t.add(node, "flatten", [a0])
    elif name in ("view", "reshape") and len(args) == 3 and args[2] == -1:
        t.add(node, "flatten", [a0])               # x.view(x.size(0), -1)
    elif name == "size":
        t.index[node] = None                        # only as view's first argument
    else:
        t.fail(f"the tensor method .{name}()")


def trace_graph(model: nn.Module, input_size) -> list:
    """The graph of ``model`` (evaluation mode), checked against an input of ``input_size``
    ``[C, H, W]`` (or ``[N]``): what :func:`check_graph` accepts."""
    model = model.eval()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:
        raise UsageError(f"--graph: torch.fx cannot trace {type(model).__name__} "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:100]})") from None
    t = _Tracer(model)
    for node in gm.graph.nodes:
        args = tuple(node.args)
        if node.op == "placeholder":
            if t.nodes:
                t.fail("more than one input")
            t.nodes.append(["input", [], {}])
            t.index[node] = 0
        elif node.op == "call_module":
            _module(t, node, t.modules[node.target], node.args[0])
        elif node.op == "call_function":
            _function(t, node, node.target, args, dict(node.kwargs))
        elif node.op == "call_method":
            _method(t, node, node.target, args, dict(node.kwargs))
        elif node.op == "output":
            out = node.args[0]
            if not isinstance(out, fx.Node) or t.index.get(out) is None:
                t.fail("an output that is not one tensor")
            if t.index[out] != len(t.nodes) - 1:        # the output is the last node
                t.fail("an output computed before the last operation")
        else:
            t.fail(f"{node.op} {node.target}")
    check_graph(t.nodes, {k: tuple(v.shape) for k, v in model.state_dict().items()},
                list(input_size), where="--graph")
    return t.nodes


def run_graph(graph: list, state: dict, x: torch.Tensor) -> torch.Tensor:
    """Evaluate ``graph`` on a batch ``x`` with the tensors of ``state``, in PyTorch: the
    reference the C runtime is tested against (and a check that tracing kept the model's
    function)."""
    vals = [x]
    for op, ins, a in graph[1:]:
        v = [vals[j] for j in ins]
        if op == "conv2d":
            y = F.conv2d(v[0], state[a["weight"]], state[a["bias"]] if a["bias"] else None,
                         a["stride"], a["padding"], a["dilation"], a["groups"])
        elif op == "linear":
            y = F.linear(v[0], state[a["weight"]], state[a["bias"]] if a["bias"] else None)
        elif op == "batchnorm":
            y = F.batch_norm(v[0], state[a["mean"]], state[a["var"]], state[a["weight"]],
                             state[a["bias"]], False, 0.0, a["eps"])
        elif op == "relu":
            y = F.relu(v[0])
        elif op == "add":
            y = v[0] + v[1]
        elif op == "maxpool2d":
            y = F.max_pool2d(v[0], a["kernel"], a["stride"], a["padding"])
        elif op == "avgpool2d":
            y = F.avg_pool2d(v[0], a["kernel"], a["stride"], a["padding"])
        elif op == "meanpool":
            y = v[0].mean((2, 3), keepdim=True)
        elif op == "flatten":
            y = v[0].flatten(1)
        elif op == "subsample":
            y = v[0][:, :, ::a["stride"][0], ::a["stride"][1]]
        else:                                       # pad
            y = F.pad(v[0], (0, 0, 0, 0, *a["channels"]))
        vals.append(y)
    return vals[-1]
