"""The ``deepcomp`` command: thin handlers that parse, call the library and print.

Exit codes: 0 success, 2 usage errors (bad flags, unknown model, bad spec), 1 runtime errors
(missing files, malformed checkpoints or .dc files). Errors are one line on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from . import __version__
from .errors import DeepcompError, UsageError

# --- shared options ------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):           # one line, exit 2 (argparse prints usage + error)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def add_data_arg(p, required=False):
    from .data import DATA_HELP
    p.add_argument("--data", required=required, metavar="SPEC",
                   help=f"data set: {DATA_HELP}" + ("" if required else
                                                     " (default: the one the file was made with)"))


def add_device_arg(p):
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to compute (default: cuda if present, else cpu)")


def add_train_args(p, prefix="", epochs=None, lr=None, help_epochs="training epochs"):
    """The options of TrainConfig, as ``--{prefix}epochs`` etc. Defaults None mean: the stage's."""
    from .train import TrainConfig
    d = TrainConfig()
    p.add_argument(f"--{prefix}epochs", type=int, default=epochs if epochs is not None else d.epochs,
                   help=f"{help_epochs} (default: %(default)s)")
    p.add_argument(f"--{prefix}lr", type=float, default=lr,
                   help="peak learning rate" + (f" (default: {d.lr})" if not prefix else ""))
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch size")
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--schedule", default=d.schedule, choices=["cosine", "step", "constant"])
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def train_config(a, prefix="", default_lr=None):
    from .train import TrainConfig
    lr = getattr(a, f"{prefix}lr".replace("-", "_"))
    return TrainConfig(epochs=getattr(a, f"{prefix}epochs".replace("-", "_")),
                       lr=lr if lr is not None else (default_lr or TrainConfig.lr),
                       batch_size=a.batch_size, momentum=a.momentum,
                       weight_decay=a.weight_decay, schedule=a.schedule,
                       warmup_epochs=a.warmup_epochs, seed=a.seed, device=a.device,
                       progress=not a.no_progress)


def load_input(a):
    """The input file (stage file, .dc or foreign checkpoint) and the data set to use with it."""
    from .data import load_data
    from .stagefile import load_stage
    sf = load_stage(a.input, model=getattr(a, "model", None))
    spec = a.data or sf.data.get("spec")
    if not spec:
        raise UsageError(f"{a.input} does not say which data it was made with: give --data SPEC")
    data = load_data(spec)
    if not sf.data.get("spec"):           # a foreign checkpoint: take the data's description
        sf.data = data.meta()
    _check_fit(sf, data)
    return sf, data


def _check_fit(sf, data):
    want = list(sf.data.get("input_size") or data.input_size)
    if list(data.input_size) != want:
        raise UsageError(f"data {data.spec!r} has inputs {list(data.input_size)}, the model "
                         f"was made for {want}")


def out_path(a):
    if not a.output:
        raise UsageError("give an output file with -o FILE")
    return a.output


def main_print(*args, **kw):
    from . import dist
    if dist.is_main():
        print(*args, **kw)


# --- commands ------------------------------------------------------------------------------


def cmd_models(a):
    from .models import list_models, model_info
    for name in list_models(a.pattern):
        info = model_info(name)
        n = f"{info.num_params:,}" if info.num_params else "-"
        print(f"{name:24s} input {'x'.join(map(str, info.input_size)):10s} params {n}")


def cmd_train(a):
    import torch
    from .data import load_data
    from .models import create
    from .stagefile import StageFile, arch_for, save_stage, stage_record
    from .train import evaluate, fit
    data = load_data(a.data)
    arch = arch_for(a.model, data.meta())
    cfg = train_config(a)
    torch.manual_seed(cfg.seed)
    model = create(arch["name"], **arch["kwargs"])
    out = out_path(a)
    t0 = time.perf_counter()
    epochs = fit(model, data, cfg)
    metrics = evaluate(model, data, a.device)
    wall = time.perf_counter() - t0
    sf = StageFile.from_model(model, arch, data.meta())
    from .sizes import stage_sizes
    sf.history.append(stage_record("baseline", {"train": cfg.to_dict()}, metrics,
                                   stage_sizes(sf), wall, epochs=epochs))
    from . import dist
    if dist.is_main():
        save_stage(out, sf)
    main_print(f"{a.model} on {a.data}: top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%"
               f"  loss {metrics['loss']:.4f}  ({wall:.1f}s)  -> {out}")


def cmd_eval(a):
    from .train import evaluate
    sf, data = load_input(a)
    model = sf.build_model()
    m = evaluate(model, data, a.device)
    if a.json:
        main_print(json.dumps(m))
    else:
        main_print(f"{a.input} on {data.spec}: top-1 {m['top1']:.2f}%  top-5 {m['top5']:.2f}%"
                   f"  loss {m['loss']:.4f}  ({m['images']} images)")


def build_parser():
    p = _Parser(prog="deepcomp", description="Deep Compression for PyTorch models: prune, "
                "quantize, Huffman-encode, decode, report.")
    p.add_argument("--version", action="version", version=f"deepcomp {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("models", help="list the registered models")
    s.add_argument("pattern", nargs="?", help="glob, e.g. 'resnet*'")
    s.set_defaults(fn=cmd_models)

    s = sub.add_parser("train", help="train a model from scratch")
    s.add_argument("--model", required=True, help="registry name (see `deepcomp models`)")
    add_data_arg(s, required=True)
    s.add_argument("-o", "--output", required=True, help="stage file to write")
    add_train_args(s)
    add_device_arg(s)
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("eval", help="top-1, top-5 and loss of a stage file, .dc file or checkpoint")
    s.add_argument("input", help="stage file, .dc file, or a foreign checkpoint (with --model)")
    s.add_argument("--model", help="architecture of a checkpoint that does not name one")
    add_data_arg(s)
    add_device_arg(s)
    s.add_argument("--json", action="store_true", help="print the metrics as JSON")
    s.set_defaults(fn=cmd_eval)

    return p


def main(argv=None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if not getattr(a, "fn", None):
        parser.print_help()
        return 2
    try:
        a.fn(a)
    except UsageError as e:
        sys.stderr.write(f"deepcomp {a.command}: error: {e}\n")
        return 2
    except DeepcompError as e:
        sys.stderr.write(f"deepcomp {a.command}: error: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"deepcomp {a.command}: interrupted\n")
        return 130
    except OSError as e:
        sys.stderr.write(f"deepcomp {a.command}: error: {e.strerror or e}: {e.filename or ''}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
