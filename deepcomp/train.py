"""Training and evaluation loops, shared by every stage that retrains.

One loop serves training, pruning's retraining and quantization's fine-tuning: stages pass an
``after_step`` hook (pruning re-applies its masks there) and otherwise share everything.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import dist
from . import resume as rs
from .checks import RANGES, check_fields
from .data import AUGMENTS, Batches, Dataset
from .errors import UsageError

__all__ = ["TrainConfig", "fit", "evaluate", "resolve_device", "resolve_precision",
           "fast_bf16", "distill_loss", "PRECISIONS", "Progress", "end_line"]

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128         # global batch (split across ranks under torchrun)
    lr: float = 0.1               # peak learning rate (He et al. 2016 train CIFAR ResNets at 0.1)
    momentum: float = 0.9         # SGD momentum of both papers' Caffe solvers
    weight_decay: float = 5e-4    # Caffe LeNet/AlexNet solvers; CIFAR ResNets use 1e-4
    schedule: str = "cosine"      # cosine | step (x0.1 at 50% and 75%) | constant
    warmup_epochs: float = 0.0    # linear warm-up from lr/10
    label_smoothing: float = 0.0
    # Augmentation of the training batches (data.AUGMENTS); auto: the data set's own (crop_flip
    # for CIFAR-10, none for the others).
    augment: str = "auto"
    # Knowledge distillation from a teacher (the stage's input model): the loss is
    # (1 - w) * cross-entropy + w * T^2 * KL(teacher_T || student_T), Hinton et al. 2015.
    # w = 0.9 and T = 4 are the KD settings of Tian et al. 2020 (CRD) for CIFAR; w = 0: none.
    distill_weight: float = 0.0
    distill_temperature: float = 4.0
    seed: int = 0
    device: str = "auto"          # auto | cpu | cuda
    # torch.compile of the training step: on | off | auto (on for runs of at least
    # COMPILE_MIN_STEPS steps on one process, where its ~25 s of compilation pays; measured by
    # tools/bench_compile.py on ResNet-20, CPU: 1.48x per step). Falls back to eager if it fails.
    compile: str = "auto"
    # Mixed precision of the training step: bf16 runs the forward and backward passes in
    # bfloat16 autocast (master weights, optimizer state, masks and centroids stay float32);
    # auto: bf16 where the device has fast bfloat16 arithmetic (CUDA with bf16; a CPU with
    # AVX-512 BF16 or AMX), else fp32. Measured by tools/bench_precision.py on ResNet-20 with
    # distillation, whole CIFAR-10 epochs (docs/PRUNING.md). Evaluation is always float32.
    precision: str = "auto"
    # Channels-last activations and weights for models with 2-D convolutions: on | off | auto
    # (on for such models: faster with bf16 and with torch.compile, same measurement).
    channels_last: str = "auto"
    progress: bool = True         # a progress bar on stderr (rank 0 only)

    def to_dict(self):
        return asdict(self)

    def check(self) -> "TrainConfig":
        """Every numeric field finite and in range (deepcomp.checks), the choices known."""
        RANGES["retrain_epochs"].check(self.epochs, "train.epochs")       # 0: nothing to train
        check_fields(self, ("lr", "momentum",
                            "weight_decay", "batch_size", "warmup_epochs", "label_smoothing",
                            "distill_weight", "distill_temperature", "seed"), "train.")
        for name, value, choices in (("schedule", self.schedule, ("cosine", "step", "constant")),
                                     ("compile", self.compile, ("auto", "on", "off")),
                                     ("precision", self.precision, PRECISIONS),
                                     ("channels_last", self.channels_last, ("auto", "on", "off")),
                                     ("augment", self.augment, ("auto",) + AUGMENTS)):
            if value not in choices:
                raise UsageError(f"train.{name} must be one of {', '.join(choices)}, "
                                 f"got {value!r}")
        return self


def resolve_device(name: str) -> torch.device:
    """The device ``auto | cpu | cuda[:N]`` names here. Under torchrun each process on a machine
    needs a GPU of its own: ``auto`` picks CUDA only where there are enough of them."""
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if name == "auto":
        return torch.device("cuda" if gpus and local_ranks <= gpus else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UsageError(f"unknown device {name!r}; expected auto, cpu or cuda")
    if name.startswith("cuda") and not gpus:
        raise UsageError("--device cuda: no CUDA device is available here")
    if name.startswith("cuda") and local_ranks > gpus:
        raise UsageError(f"--device cuda: torchrun started {local_ranks} processes on this "
                         f"machine, which has {gpus} GPU(s); give --nproc_per_node {gpus} or "
                         "--device cpu")
    return torch.device(name)


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` does bfloat16 arithmetic natively: a CUDA device that supports it, or
    a CPU with AVX-512 BF16 or AMX (asked of the CPU, not guessed from its name)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    if any(callable(getattr(torch.cpu, f, None)) for f in probes):
        return any(getattr(torch.cpu, f, lambda: False)() for f in probes)
    try:                     # an older torch: the kernel's own flags
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> str:
    """``bf16`` or ``fp32`` for a :attr:`TrainConfig.precision` on ``device``."""
    if name not in PRECISIONS:
        raise UsageError(f"unknown precision {name!r}; expected {', '.join(PRECISIONS)}")
    fast = fast_bf16(device)
    if name == "bf16" and not fast:
        raise UsageError(f"--precision bf16: this {device.type.upper()} has no fast bfloat16 "
                         "arithmetic (AVX-512 BF16 or AMX on a CPU); use --precision fp32 or auto")
    if name == "auto":
        return "bf16" if fast else "fp32"
    return name


_announced: set = set()


def _announce(precision: str, device: torch.device, asked: str) -> None:
    """Say once per process and device which precision training uses, and why."""
    if (precision, device.type) in _announced or not dist.is_main():
        return
    _announced.add((precision, device.type))
    why = {"bf16": "bfloat16 autocast (the device has fast bfloat16)",
           "fp32": "float32"}[precision]
    how = "; --precision fp32 to train in float32" if precision == "bf16" else ""
    print(f"training in {why} on {device.type}"
          f"{' (--precision auto)' if asked == 'auto' else ''}{how}", flush=True)


def _use_channels_last(cfg: TrainConfig, model: nn.Module) -> bool:
    if cfg.channels_last not in ("auto", "on", "off"):
        raise UsageError(f"channels_last must be auto, on or off, got {cfg.channels_last!r}")
    if cfg.channels_last != "auto":
        return cfg.channels_last == "on"
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _device_for_rank(device: torch.device) -> torch.device:
    if device.type == "cuda" and dist.active():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _lr_at(cfg: TrainConfig, t: float) -> float:
    """Learning rate at fractional epoch ``t``."""
    if t < cfg.warmup_epochs:
        return cfg.lr * (0.1 + 0.9 * t / cfg.warmup_epochs)
    if cfg.schedule == "constant":
        return cfg.lr
    frac = t / max(cfg.epochs, 1e-9)
    if cfg.schedule == "step":
        return cfg.lr * (0.1 ** ((frac >= 0.5) + (frac >= 0.75)))
    if cfg.schedule == "cosine":
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(frac, 1.0)))
    raise UsageError(f"unknown schedule {cfg.schedule!r}; expected cosine, step or constant")


_open_line = [False]       # a progress bar is drawn on the terminal, its line not ended


def end_line() -> None:
    """End a progress bar's line on the terminal, so the next message starts on its own."""
    if _open_line[0]:
        sys.stderr.write("\n")
        sys.stderr.flush()
        _open_line[0] = False


class Progress:
    """A one-line progress bar on stderr, redrawn at most a few times a second. ``tty_only``:
    drawn on a terminal only (else a line every 30 s, for training logs)."""

    def __init__(self, enabled: bool, total: int, desc: str, tty_only: bool = False):
        self.tty = sys.stderr.isatty()
        self.enabled = enabled and dist.is_main() and (self.tty or not tty_only)
        self.total, self.desc = total, desc
        self.last = time.monotonic()

    def update(self, i: int, text: Callable[[], str] = lambda: "", final=False):
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < (0.25 if self.tty else 30)):
            return
        self.last = now
        width = 24
        done = int(width * i / max(self.total, 1))
        bar = "#" * done + "." * (width - done)
        end = "\n" if final or not self.tty else ""
        sys.stderr.write(f"\r{self.desc} [{bar}] {i}/{self.total} {text()}{end}")
        sys.stderr.flush()
        _open_line[0] = not end

    def close(self) -> None:
        """Clear a terminal bar that was drawn (the caller prints its own result)."""
        if self.enabled and self.tty and _open_line[0]:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            _open_line[0] = False


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. (2015): KL divergence between the softened outputs, times T**2 so that its
    gradients keep their scale whatever the temperature."""
    t = temperature
    return F.kl_div(F.log_softmax(student.float() / t, 1), F.log_softmax(teacher.float() / t, 1),
                    reduction="batchmean", log_target=True) * (t * t)


def fit(model: nn.Module, data: Dataset, cfg: TrainConfig,
        after_step: Callable[[int], None] | None = None, desc: str = "train",
        params=None, teacher: nn.Module | None = None, resume: dict | None = None,
        checkpoint: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``model`` in place with SGD; return one dict of metrics per epoch.

    ``after_step(step)`` runs after every optimizer step, with the count of steps so far
    (pruning re-applies or updates its masks there).
    ``params`` restricts what the optimizer updates (default: every parameter that requires grad).
    ``teacher``: with ``cfg.distill_weight > 0``, the loss mixes cross-entropy with the
    distillation loss against this model's outputs.
    ``checkpoint(state)`` is called at the end of every epoch and, when a stop signal arrived
    (deepcomp.resume), at the next step boundary, after which :class:`resume.Stopped` is raised.
    ``resume`` is such a state: training goes on from where it was taken, with the same result
    as a run that never stopped.
    """
    cfg.check()
    run = _Run(model, data, cfg, params, teacher)
    history, first_epoch, first_step, sums = [], 0, 0, [0.0, 0, 0]
    if resume is not None:
        history, first_epoch, first_step, sums = run.restore(resume)
    with rs.training():
        for epoch in range(first_epoch, cfg.epochs):
            skip = first_step if epoch == first_epoch else 0
            history.append(run.epoch(epoch, skip, sums, history, after_step, desc, checkpoint))
            if checkpoint is not None:
                checkpoint(run.state(history, epoch + 1, 0, 0.0, 0, 0))
    run.finish()
    return history


def _sgd(model: nn.Module, cfg: TrainConfig, params=None) -> torch.optim.SGD:
    """SGD with momentum over ``params`` (default: the model's) that require grad; weight decay
    on tensors of 2 or more dimensions only (weights and kernels, not biases or BatchNorm)."""
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=cfg.lr, momentum=cfg.momentum)


COMPILE_MIN_STEPS = 2000    # ~5 CIFAR epochs at batch 128: 0.075 s saved a step pays 25 s twice


def _compiled(net: nn.Module, cfg: TrainConfig, total_steps: int):
    """``torch.compile(net)`` where ``cfg.compile`` asks for it (see TrainConfig), else None."""
    if cfg.compile not in ("auto", "on", "off"):
        raise UsageError(f"compile must be auto, on or off, got {cfg.compile!r}")
    if cfg.compile == "off" or cfg.compile == "auto" and (
            total_steps < COMPILE_MIN_STEPS or dist.active()):
        return None
    try:
        compiled = torch.compile(net)
    except Exception:        # no compiler backend here: eager it is
        return None
    if cfg.progress and dist.is_main():
        print("torch.compile: the first training step compiles the model (about half a "
              "minute on a CPU)", flush=True)
    return compiled


def _to_cpu(obj):
    """``obj`` (nested dicts and lists) with every tensor copied to the CPU: a checkpoint made on
    one device resumes on another (the optimizer moves its state to the parameters' device)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


class _Run:
    """One :func:`fit` run: the model on its device (under DistributedDataParallel when
    torchrun started several ranks), the teacher, the optimizer and the training batches."""

    def __init__(self, model: nn.Module, data: Dataset, cfg: TrainConfig, params,
                 teacher: nn.Module | None):
        device = resolve_device(cfg.device)
        dist.setup(device)
        self.device = device = _device_for_rank(device)
        torch.manual_seed(cfg.seed)
        model.to(device)
        self.cuda = cuda = device.type == "cuda"
        self.precision = resolve_precision(cfg.precision, device)
        _announce(self.precision, device, cfg.precision)
        self.channels_last = _use_channels_last(cfg, model)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.distill = teacher is not None and cfg.distill_weight > 0
        if self.distill:
            teacher.to(device).eval()
            if self.channels_last:
                teacher.to(memory_format=torch.channels_last)
        self.model, self.teacher, self.cfg = model, teacher, cfg
        self.net = model
        if dist.active():
            self.net = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if cuda else None)
        self.opt = _sgd(model, cfg, params)
        self.batches = Batches(data.train_x, data.train_y, cfg.batch_size, data.mean, data.std,
                               shuffle=True, seed=cfg.seed, device=device,
                               augment=data.augment if cfg.augment == "auto" else cfg.augment,
                               rank=dist.rank(), world_size=dist.world_size(), drop_last=False,
                               channels_last=self.channels_last)
        self.steps = len(self.batches)
        self.compiled = _compiled(self.net, cfg, self.steps * cfg.epochs)

    def restore(self, resume: dict):
        """Load a :meth:`state` into the model, the optimizer and the RNG; return the history,
        epoch, step and running sums (loss, correct, seen) to go on from."""
        saved = resume.get("precision", "fp32")
        if saved != self.precision:
            raise rs.ResumeMismatchError(f"the checkpoint was trained in {saved}, this run would "
                                         f"train in {self.precision} (--precision): run with "
                                         f"--precision {saved} to resume, or --restart to "
                                         "discard it")
        self.model.load_state_dict(resume["model"])
        self.opt.load_state_dict(resume["optimizer"])
        torch.set_rng_state(resume["rng"])
        return list(resume["history"]), resume["epoch"], resume["step"], list(resume["sums"])

    def state(self, history, epoch, step, loss_sum, correct, seen) -> dict:
        """What a checkpoint holds to resume at ``step`` of ``epoch``."""
        return {"model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "optimizer": _to_cpu(self.opt.state_dict()), "rng": torch.get_rng_state(),
                "history": list(history), "epoch": epoch, "step": step,
                "sums": [float(loss_sum), int(correct), int(seen)],
                "precision": self.precision}

    def epoch(self, epoch, skip, sums, history, after_step, desc, checkpoint) -> dict:
        """Train one epoch; return its record. A resumed epoch (``skip`` > 0) replays its batches
        up to step ``skip`` without training on them and starts from the running ``sums``. A stop
        signal saves a checkpoint at the next step and raises :class:`resume.Stopped`."""
        cfg, steps, device = self.cfg, self.steps, self.device
        self.model.train()
        self.batches.set_epoch(epoch)
        loss_sum = torch.tensor(sums[0] if skip else 0.0, device=device)
        correct = torch.tensor(sums[1] if skip else 0, device=device, dtype=torch.long)
        seen = sums[2] if skip else 0
        bar = Progress(cfg.progress, steps, f"{desc} {epoch + 1}/{cfg.epochs}")
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(self.batches):
            if i < skip:            # a resumed epoch replays its batches up to where it stopped
                continue
            signum = rs.stop_requested()
            if signum:
                if checkpoint is not None:
                    checkpoint(self.state(history, epoch, i, loss_sum.item(), correct.item(), seen))
                raise rs.Stopped(f"epoch {epoch + 1}, step {i}", signum)
            lr = _lr_at(cfg, epoch + i / steps)
            out, loss = self.step(x, y, lr)
            if after_step is not None:
                after_step(epoch * steps + i + 1)
            loss_sum += loss.detach() * len(y)
            correct += (out.detach().argmax(1) == y).sum()
            seen += len(y)
            bar.update(i + 1, lambda: f"loss {loss_sum.item() / seen:.4f} "
                                      f"acc {100 * correct.item() / seen:.2f}% lr {lr:.4g}")
        stats = dist.all_reduce_sum(torch.stack([loss_sum.float(), correct.float(),
                                                 torch.tensor(float(seen), device=device)]))
        rec = {"epoch": epoch + 1, "loss": (stats[0] / stats[2]).item(),
               "train_top1": (100 * stats[1] / stats[2]).item(),
               "seconds": time.perf_counter() - t0, "precision": self.precision}
        bar.update(steps, lambda: f"loss {rec['loss']:.4f} acc {rec['train_top1']:.2f}% "
                                  f"({rec['seconds']:.1f}s)", final=True)
        return rec

    def step(self, x, y, lr: float):
        """One optimizer step at learning rate ``lr`` on batch ``(x, y)``: (outputs, loss).
        With precision bf16 the forward pass runs in bfloat16 autocast; the parameters, their
        gradients and the optimizer's state stay float32."""
        for group in self.opt.param_groups:
            group["lr"] = lr
        if self.compiled is not None:
            try:
                return self._step(self.compiled, x, y)
            except Exception as e:    # compilation failed (no C compiler, an op it cannot trace)
                sys.stderr.write(f"torch.compile failed ({type(e).__name__}); training eagerly\n")
                self.compiled = None
        return self._step(self.net, x, y)

    def _step(self, net, x, y):
        cfg = self.cfg
        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                            enabled=self.precision == "bf16"):
            out = net(x)
            loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
            if self.distill:
                with torch.no_grad():
                    target = self.teacher(x)
                w = cfg.distill_weight
                loss = (1 - w) * loss + w * distill_loss(out, target, cfg.distill_temperature)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return out, loss

    def finish(self) -> None:
        """Leave the model in eval mode with rank 0's BatchNorm statistics on every rank (they
        are per rank; DDP takes rank 0's at each step too)."""
        if dist.active():
            for b in self.model.buffers():
                dist.broadcast(b, 0)
        if self.channels_last:
            self.model.to(memory_format=torch.contiguous_format)
        self.model.eval()


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, device: str = "auto", batch_size: int = 1000,
             split: str = "test", progress: bool = True) -> dict:
    """Top-1 and top-5 accuracy (percent) and mean cross-entropy on a split.
    Under torchrun each rank scores a contiguous share and the sums are reduced."""
    dev = resolve_device(device)
    dist.setup(dev)
    dev = _device_for_rank(dev)
    model.to(dev).eval()
    x, y = (data.test_x, data.test_y) if split == "test" else (data.train_x, data.train_y)
    r, w = dist.rank(), dist.world_size()
    lo, hi = len(y) * r // w, len(y) * (r + 1) // w
    stats = torch.zeros(4, device=dev, dtype=torch.float64)
    batches = Batches(x[lo:hi], y[lo:hi], batch_size, data.mean, data.std, device=dev)
    bar = Progress(progress, len(batches), f"evaluate ({hi - lo:,} images)", tty_only=True)
    for i, (xb, yb) in enumerate(batches):
        bar.update(i)
        out = model(xb).float()
        hit = out.topk(min(5, out.shape[1]), 1).indices == yb[:, None]
        stats += torch.stack([hit[:, 0].sum(), hit.any(1).sum(),
                              F.cross_entropy(out, yb, reduction="sum"),
                              torch.tensor(len(yb), device=dev)]).double()
    bar.close()
    n, top1, top5, loss = dist.all_reduce_sum(stats)[[3, 0, 1, 2]].tolist()
    return {"top1": round(100 * top1 / n, 4), "top5": round(100 * top5 / n, 4),
            "loss": round(loss / n, 6), "images": int(n)}
