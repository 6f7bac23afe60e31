"""The compression report: what each stage cost and bought, in the paper's table layout.

Reads the ``history`` that travels inside stage files and ``.dc`` files, so one final file is
enough for the per-stage table; give the earlier stage files too for histograms of the weights.

Sizes: the baseline is every floating-point tensor at 32 bits; pruned and quantized stages are
counted as the paper does (``sizes.py``: value bits + relative-index bits per kept weight,
fillers and codebooks included); the encoded stage's size is the ``.dc`` file, every byte.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass

import torch

from .errors import CheckpointError, UsageError
from .sizes import format_ratio, layer_sizes
from .loading import load_stage
from .plots import plot_accuracy_ratio, plot_histograms, plot_kept
from .stagefile import StageFile

__all__ = ["read_inputs", "stage_rows", "layer_rows", "render", "report_text", "make_plots",
           "collapse_warnings", "search_rows", "report_json", "machine_rows",
           "STAGE_COLUMNS", "LAYER_COLUMNS"]

STAGE_ORDER = {"baseline": 0, "pruned": 1, "quantized": 2, "encoded": 3}

STAGE_COLUMNS = [("stage", "stage"), ("params", "params"), ("nonzero", "non-zero"),
                 ("weight_bits", "weight bits"), ("index_bits", "index bits"),
                 ("bytes", "size (bytes)"), ("ratio", "ratio"), ("top1", "top-1 %"),
                 ("top5", "top-5 %"), ("delta_top1", "Δ top-1"), ("seconds", "time (s)")]

LAYER_COLUMNS = [("layer", "layer"), ("weights", "#weights"), ("kept", "weights % (P)"),
                 ("wbits_pq", "weight bits (P+Q)"), ("wbits_pqh", "weight bits (P+Q+H)"),
                 ("ibits_pq", "index bits (P+Q)"), ("ibits_pqh", "index bits (P+Q+H)"),
                 ("rate_pq", "compress rate (P+Q)"), ("rate_pqh", "compress rate (P+Q+H)"),
                 ("macs", "MACs (dense)"), ("macs_kept", "MACs (kept)")]


@dataclass
class Inputs:
    files: list                # (path, StageFile), in the order given
    records: list              # the merged history, oldest first

    @property
    def last(self) -> StageFile:
        return self.files[-1][1]


def read_inputs(paths: list[str], model: str | None = None) -> Inputs:
    files = [(p, load_stage(p, model=model)) for p in paths]
    seen, records = set(), []
    for _, sf in sorted(files, key=lambda f: len(f[1].history)):
        for rec in sf.history:
            key = json.dumps({k: rec.get(k) for k in ("stage", "command", "wall_time")},
                             sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                records.append(rec)
    return Inputs(files, records)


def _bits_label(values) -> str:
    vals = sorted(set(values), reverse=True)
    return "/".join(f"{v:g}" for v in vals) if vals else "-"


def _dense_bits(sizes: dict, qbits: str, ibits: str) -> tuple[str, str]:
    return "32", "-"


def _encoded_bits(sizes: dict, qbits: str, ibits: str) -> tuple[str, str]:
    """The .dc file's mean bits per stored entry (its record's tensors); without them, dense."""
    tensors = sizes.get("tensors", {})
    if not tensors:
        return _dense_bits(sizes, qbits, ibits)
    wb, ib = _mean_bits(tensors, "weight_bits"), _mean_bits(tensors, "index_bits")
    return (f"{wb:.2f}" if wb else "32"), (f"{ib:.2f}" if ib else "-")


# stage -> (its record's sizes, the last file's weight bits and index bits) -> the row's weight
# bits and index bits; any other stage (the baseline) is dense float32: _dense_bits.
_STAGE_BITS = {
    "pruned": lambda sizes, qbits, ibits: ("32", ibits),
    "quantized": lambda sizes, qbits, ibits: (qbits, ibits),
    "encoded": _encoded_bits,
}


def stage_rows(inp: Inputs) -> list[dict]:
    """One row per stage record (plus a baseline row when the history starts from a foreign
    checkpoint, taken from the first stage's 'before' metrics)."""
    rows = []
    recs = inp.records
    layers = layer_sizes(inp.last)
    ibits_all = _bits_label(r["index_bits"] for r in layers if r["index_bits"]) if layers else "-"
    qbits = _bits_label(int(q["bits"]) for n, q in inp.last.quant.items()   # the weights' bits,
                        if inp.last.state_dict[n].dim() >= 2)          # not --dense-bits
    dense = None
    for rec in recs:
        dense = dense or rec.get("sizes", {}).get("dense_bytes")
    if recs and recs[0]["stage"] != "baseline":
        before = recs[0].get("metrics", {}).get("before")
        z = recs[0].get("sizes", {})
        rows.append({"stage": "baseline", "params": z.get("params"), "nonzero": 1.0,
                     "weight_bits": "32", "index_bits": "-", "bytes": dense, "ratio": 1.0,
                     "top1": (before or {}).get("top1"), "top5": (before or {}).get("top5"),
                     "seconds": None, "command": "(not in the file: its history was stripped)"
                     if recs[0].get("stripped") else "(input checkpoint)"})
    for rec in recs:
        if rec["stage"] == "search":      # its candidates get their own table (search_rows)
            continue
        z = rec.get("sizes", {})
        m = rec.get("metrics", {})
        stage = rec["stage"]
        wbits, ibits = _STAGE_BITS.get(stage, _dense_bits)(z, qbits, ibits_all)
        lossy = rec.get("lossy")          # True in files from before --fold-bn: float16
        label = f"{stage} ({'float16' if lossy is True else lossy}, lossy)" if lossy else stage
        if rec.get("split") == "validation":      # target mode: measured on held-out training images
            label = f"{stage} (validation)"
        rows.append({"stage": label, "split": rec.get("split", "test"),
                     "reference_top1": (rec.get("validation_reference") or {}).get("top1"),
                     "params": z.get("params"),
                     "nonzero": z.get("nonzero_share", 1.0), "weight_bits": wbits,
                     "index_bits": ibits, "bytes": z.get("bytes"), "ratio": z.get("ratio"),
                     "top1": m.get("top1"), "top5": m.get("top5"),
                     "seconds": rec.get("wall_time"), "command": rec.get("command", "")})
    base = rows[0]["top1"] if rows else None
    for r in rows:      # a validation row against the input's validation top-1
        ref = r.pop("reference_top1", None) if r.get("split") == "validation" else base
        r.pop("reference_top1", None)
        r["delta_top1"] = (r["top1"] - ref) if (r["top1"] is not None and ref is not None) else None
    return rows


SEARCH_COLUMNS = [("candidate", "candidate"), ("nonzero", "non-zero"), ("bits", "bits"),
                  ("val_top1", "val top-1 %"), ("delta_top1", "Δ val top-1"),
                  ("bytes", "size (bytes)"), ("epochs", "epochs"), ("used", "epochs used"),
                  ("verdict", "")]


def search_rows(inp: Inputs) -> list[dict]:
    """Every candidate of the last target-mode search in the history (deepcomp.search)."""
    rec = next((r for r in reversed(inp.records) if r["stage"] == "search"), None)
    rows = []
    for c in (rec or {}).get("candidates", []):
        verdict = "chosen" if c.get("chosen") else "within" if c.get("within") else "outside"
        rows.append({"candidate": c["kind"], "nonzero": 1 - c["sparsity"], "bits": c.get("bits") or "32",
                     "val_top1": c["val_top1"], "delta_top1": 0.0 - c["drop"], "bytes": c["bytes"],
                     "epochs": c["epochs"], "used": c["used"], "verdict": verdict})
    return rows


def _mean_bits(tensors: dict, key: str) -> float | None:
    """Mean bits per stored entry over the tensors that have the key, weighted by entries."""
    num = den = 0.0
    for t in tensors.values():      # weights only, not a bias shared by --dense-bits
        if t.get(key) is not None and t.get("entries") and len(t.get("shape", (0, 0))) >= 2:
            num += t[key] * t["entries"]
            den += t["entries"]
    return num / den if den else None


def layer_rows(inp: Inputs) -> list[dict]:
    """The paper's per-layer table (Table 2 layout) for the last file given, with each layer's
    multiply-accumulates per input: dense, and for the weights kept (what pruning saves in
    arithmetic), and a total row."""
    sf = inp.last
    enc = next((r for r in reversed(inp.records) if r["stage"] == "encoded"), None)
    tensors = (enc or {}).get("sizes", {}).get("tensors", {})
    positions = output_positions(sf)
    rows = []
    for r in layer_sizes(sf):
        t = tensors.get(r["name"], {})
        at = positions.get(r["name"])
        rows.append({"layer": r["name"].removesuffix(".weight"), "weights": r["weights"],
                     "kept": r["kept_share"], "wbits_pq": r["weight_bits"],
                     "wbits_pqh": t.get("weight_bits"), "ibits_pq": r["index_bits"] or None,
                     "ibits_pqh": t.get("index_bits"), "rate_pq": r["ratio"],
                     "rate_pqh": (32 * r["weights"] / (8 * t["bytes"])) if t.get("bytes") else None,
                     "macs": at * r["weights"] if at else None,
                     "macs_kept": at * r["kept"] if at else None})
    if rows and all(r["macs"] for r in rows):
        rows.append({"layer": "total", "weights": sum(r["weights"] for r in rows),
                     "kept": sum(r["kept"] * r["weights"] for r in rows) /
                     max(1, sum(r["weights"] for r in rows)),
                     "macs": sum(r["macs"] for r in rows),
                     "macs_kept": sum(r["macs_kept"] for r in rows)})
    return rows


def output_positions(sf: StageFile) -> dict:
    """For each convolution and linear weight, the output positions one input sample makes it
    visit (H x W of a convolution's output, 1 for a linear layer), from one forward pass of
    the model on zeros of the recorded input size; {} when the size is not recorded or the
    model does not run."""
    size = sf.data.get("input_size")
    if not size:
        return {}
    try:
        model = sf.build_model().eval()
    except Exception:
        return {}
    names = {id(m): n for n, m in model.named_modules()}
    seen, hooks = {}, []

    def hook(mod, args, out):
        seen[names[id(mod)] + ".weight"] = int(out[0, 0].numel()) if out.dim() > 2 else 1
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)):
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.zeros(1, *size))
    except Exception:
        return {}
    finally:
        for h in hooks:
            h.remove()
    return seen


def _fmt(key, v) -> str:
    if v is None:
        return "-"
    if key in ("nonzero", "kept"):
        return f"{100 * v:.2f}%"
    if key in ("ratio", "rate_pq", "rate_pqh"):
        return format_ratio(v)
    if key in ("top1", "top5", "val_top1"):
        return f"{v:.2f}"
    if key == "delta_top1":
        return f"{v:+.2f}"
    if key in ("wbits_pqh", "ibits_pqh") and isinstance(v, float):
        return f"{v:.2f}"
    if key in ("macs", "macs_kept"):
        return f"{v:,}"
    if key == "seconds":
        return f"{v:.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


# Decimals of a float in the machine formats (csv, json): as the text table shows it, so
# 46.12 is written 46.12, not 46.120000000000005. Shares keep 6 (the text shows percent).
_DECIMALS = {"nonzero": 6, "kept": 6, "ratio": 2, "rate_pq": 2, "rate_pqh": 2, "top1": 2,
             "top5": 2, "val_top1": 2, "delta_top1": 2, "wbits_pqh": 2, "ibits_pqh": 2,
             "wbits_pq": 2, "ibits_pq": 2, "seconds": 1}


def machine_rows(rows: list[dict], columns) -> list[dict]:
    """The rows' columns (and command) with floats rounded as displayed: csv and json."""
    keys = [k for k, _ in columns] + (["command"] if rows and "command" in rows[0] else [])
    def cell(k, v):
        return round(v, _DECIMALS.get(k, 6)) if isinstance(v, float) else v
    return [{k: cell(k, r.get(k)) for k in keys} for r in rows]


def render(rows: list[dict], columns, fmt: str = "text", title: str | None = None,
           commands: bool = True) -> str:
    """Render rows as text, markdown, csv or json (a list of objects)."""
    if fmt == "json":
        return json.dumps(machine_rows(rows, columns), indent=2, default=str) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        keys = [k for k, _ in columns] + (["command"] if commands and rows and "command" in rows[0] else [])
        w = csv.DictWriter(buf, keys, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(machine_rows(rows, columns))
        return buf.getvalue()
    heads = [h for _, h in columns]
    cells = [[_fmt(k, r.get(k)) for k, _ in columns] for r in rows]
    out = []
    if fmt == "markdown":
        if title:
            out.append(f"**{title}**\n")
        out.append("| " + " | ".join(heads) + " |")
        out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(heads))) + "|")
        out += ["| " + " | ".join(c) + " |" for c in cells]
    else:
        widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
                  for i, h in enumerate(heads)]
        if title:
            out.append(title)
        line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(heads, widths)))
        out += [line, "-" * len(line)]
        out += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                for row in cells]
    if commands and rows and any(r.get("command") for r in rows):
        out.append("")
        out += [f"- {r['stage']}: `{r['command']}`" if fmt == "markdown"
                else f"{r['stage']:10s} {r['command']}" for r in rows if r.get("command")]
    return "\n".join(out) + "\n"


def make_plots(inp: Inputs, folder: str, layer: str | None = None) -> list[str]:
    """Weight histograms of one layer across the given files (paper, Figure 5 style), the kept
    share per layer, and accuracy against compression ratio across stages. Returns the paths."""
    last = inp.last
    rows = layer_sizes(last)
    if layer is None:     # the largest prunable layer, as the paper shows its largest conv layer
        layer = max(rows, key=lambda r: r["weights"])["name"] if rows else None
    elif not layer.endswith(".weight"):
        layer += ".weight"
    if layer is not None and not any(layer in sf.state_dict for _, sf in inp.files):
        names = ", ".join(r["name"].removesuffix(".weight") for r in rows[:8])
        raise UsageError(f"--layer {layer.removesuffix('.weight')}: no such layer; layers are "
                         f"{names}{' ...' if len(rows) > 8 else ''}")
    os.makedirs(folder, exist_ok=True)
    paths = []
    if layer is not None:
        series = []
        for path, sf in inp.files:
            if layer in sf.state_dict:
                w = sf.state_dict[layer].float().reshape(-1)
                if layer in sf.masks:
                    w = w[sf.masks[layer].reshape(-1)]
                series.append((f"{sf.stage} ({os.path.basename(path)})", w.numpy()))
        p = os.path.join(folder, "weights_histogram.png")
        plot_histograms(series, p, f"Weights of {layer.removesuffix('.weight')} "
                                   "(pruned weights left out)")
        paths.append(p)
    if last.masks:
        p = os.path.join(folder, "kept_per_layer.png")
        plot_kept(rows, p, f"Share of weights kept per layer ({last.arch['name']})")
        paths.append(p)
    srows = [r for r in stage_rows(inp) if r["top1"] is not None and r["ratio"]
             and r.get("split") != "validation"]
    if srows:
        p = os.path.join(folder, "accuracy_vs_ratio.png")
        plot_accuracy_ratio(srows, p, f"{last.arch['name']}: accuracy against compression")
        paths.append(p)
    return paths


COLLAPSE_SHARE = 0.01     # a layer that keeps less than this share of its weights is warned of


def collapse_warnings(sf: StageFile) -> list[str]:
    """One line per layer that keeps under 1% of its weights: such a layer all but cuts the
    network (global magnitude pruning can take a whole layer; see PruneConfig.min_keep)."""
    return [f"warning: {r['name'].removesuffix('.weight')} keeps {100 * r['kept_share']:.2f}% of "
            f"its {r['weights']:,} weights (under {100 * COLLAPSE_SHARE:g}%)"
            for r in layer_sizes(sf) if r["kept_share"] < COLLAPSE_SHARE]


def report_json(inp: Inputs, layers=False) -> str:
    """One JSON document: the model, the data, the stages, the target-mode candidates (if any)
    and, with ``layers``, the per-layer table."""
    doc = {"model": inp.last.arch["name"], "data": inp.last.data.get("spec"),
           "stages": machine_rows(stage_rows(inp), STAGE_COLUMNS)}
    search = search_rows(inp)
    if search:
        doc["search"] = machine_rows(search, SEARCH_COLUMNS)
    if layers:
        doc["layers"] = machine_rows(layer_rows(inp), LAYER_COLUMNS)
    return json.dumps(doc, indent=2, default=str) + "\n"


def report_text(inp: Inputs, fmt="text", layers=False) -> str:
    """The per-stage table (and with ``layers`` the per-layer one) of :func:`read_inputs`' result.
    Text and markdown end with the warnings of :func:`collapse_warnings`. ``json`` is one
    document (:func:`report_json`); ``csv`` is one table: the stages, or with ``layers`` the
    per-layer table alone."""
    if not inp.records:
        path = inp.files[-1][0]
        raise CheckpointError(f"{path} holds no stage history to report: report reads the "
                              "history of stage files and .dc files (a plain checkpoint has none)")
    if fmt == "json":
        return report_json(inp, layers)
    if fmt == "csv":
        return render(layer_rows(inp), LAYER_COLUMNS, fmt, commands=False) if layers else \
            render(stage_rows(inp), STAGE_COLUMNS, fmt)
    text = render(stage_rows(inp), STAGE_COLUMNS, fmt,
                  title=f"{inp.last.arch['name']} on {inp.last.data.get('spec')}")
    search = search_rows(inp)
    if search and fmt in ("text", "markdown"):
        rec = next(r for r in reversed(inp.records) if r["stage"] == "search")
        cfg = rec.get("config", {})
        text += "\n" + render(search, SEARCH_COLUMNS, fmt, commands=False,
                              title=f"target mode: at most {cfg.get('max_drop')} points of validation "
                                    f"top-1, {rec.get('epochs_used')} of {cfg.get('budget_epochs')} "
                                    "epochs used; the test set is read only after the choice")
    if layers:
        text += "\n" + render(layer_rows(inp), LAYER_COLUMNS, fmt, commands=False,
                              title="per layer (P: pruning, Q: quantization, H: Huffman coding)")
    if fmt in ("text", "markdown"):
        text += "".join(f"\n{w}\n" for w in collapse_warnings(inp.last))
    return text
