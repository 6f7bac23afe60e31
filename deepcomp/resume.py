"""Resuming a stage inside its training: checkpoints beside the output, and stopping on signals.

A stage that trains (pruning's retraining, gradual pruning, codebook fine-tuning) writes a
checkpoint beside its output at the end of every epoch, and at the step where a SIGTERM or
SIGINT stopped it: the weights, masks and codebooks, the optimizer's state, the round, epoch and
step, the metrics so far, and a *fingerprint* of the stage's settings and input. Running the
same command again resumes from it; a checkpoint made by other settings is refused with the
first difference named (``--restart`` discards it). The checkpoint is removed when the stage
finishes. Everything in it is plain data: it loads with ``torch.load(weights_only=True)``.

The data order needs no saved random state: every epoch's permutation and augmentation are
drawn from a generator seeded by (seed, epoch), so a resumed epoch replays its batches.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from contextlib import contextmanager

import torch

from . import dist
from .errors import CheckpointError, DeepcompError
from .stagefile import atomic_write

__all__ = ["Checkpoint", "Stopped", "stop_requested", "handle_stop_signals", "fingerprint",
           "settings", "default_settings", "same_run",
           "save_then_check", "training"]

CKPT_FORMAT = "deepcomp-resume/1"


class Stopped(DeepcompError):
    """A stage stopped on a signal after writing its checkpoint; ``exit_code`` is 128 + signal."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


class ResumeMismatchError(CheckpointError):
    """A checkpoint beside the output was made by other settings or from another input."""


# --- stop on SIGTERM / SIGINT at the next step boundary ----------------------------------------

_state = {"signum": None, "training": 0}


def stop_requested() -> int | None:
    """The signal that asked to stop, or None. Under torchrun every rank learns of it at the
    same step (a rank may have been signalled alone, and ranks must stop together)."""
    if not dist.active():
        return _state["signum"]
    flag = torch.tensor([float(_state["signum"] or 0)])
    dist.all_reduce_max(flag)
    return int(flag.item()) or None


def save_then_check(save, state, where: str) -> None:
    """A resumable loop's step is done: ``save(state)``, then stop if a signal asked to
    (:class:`Stopped` says ``where``). Used by scans and sweeps, whose unit is a layer or a
    point, as training's is a step."""
    save(state)
    signum = stop_requested()
    if signum:
        raise Stopped(f"stopped {where}; run the same command to resume", signum)


@contextmanager
def training():
    """Marks a training loop: inside it a signal is noted and acted on at the next step."""
    _state["training"] += 1
    try:
        yield
    finally:
        _state["training"] -= 1


def _on_signal(signum, frame):
    if _state["training"] and _state["signum"] is None:
        _state["signum"] = signum
        return
    raise Stopped(f"stopped by {signal.Signals(signum).name} (no training step was running, "
                  "so nothing was saved)", signum)


@contextmanager
def handle_stop_signals():
    """Install the SIGTERM and SIGINT handlers for the duration of a command."""
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    _state["signum"] = None
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _state["signum"] = None


# --- the checkpoint file -----------------------------------------------------------------------

def state_digest(state_dict: dict, masks: dict | None = None) -> str:
    """SHA-256 of a state dict's names, shapes, dtypes and bytes (and masks): the input's identity."""
    h = hashlib.sha256()
    for part in (state_dict, masks or {}):
        for k in sorted(part):
            t = part[k].detach().cpu().contiguous()
            h.update(f"{k}|{tuple(t.shape)}|{t.dtype}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def settings(config: dict) -> dict:
    """A config's settings (``to_dict()``) as a run's identity holds them: whether progress bars
    are shown changes nothing. The checkpoint's fingerprint and the pipeline's finished-stage
    key both read them through this."""
    if isinstance(config, dict):
        return {k: settings(v) for k, v in config.items() if k != "progress"}
    return config


def _plain(x):
    """``x`` as it reads back from JSON (tuples as lists, other values as their strings)."""
    return json.loads(json.dumps(x, default=str))


def default_settings(config) -> dict:
    """The settings of ``config``'s class at their defaults, as an identity holds them: what a
    setting absent from an older identity is read against (:func:`_first_difference`)."""
    return _plain(settings(type(config)().to_dict()))


def fingerprint(stage: str, config: dict, upstream, data_spec: str | None) -> dict:
    """What a stage's result depends on: its settings, its input and its data. ``upstream`` is
    the input StageFile, identified by its architecture and a digest of its weights and masks."""
    return _plain({"stage": stage, "config": settings(config), "data": data_spec,
                   "arch": upstream.arch,
                   "input": state_digest(upstream.state_dict, upstream.masks)})


def same_run(old, new: dict, config) -> bool:
    """Whether the identity ``old`` (a fingerprint as read back) names the run ``new`` does,
    settings ``old`` lacks read against the defaults of ``config``'s class."""
    return _first_difference(old, new, defaults={"config": default_settings(config)}) is None


def _first_difference(old, new, path="", defaults=None) -> str | None:
    """The first setting that differs between two fingerprints, in words; None when they agree.
    A setting that a newer deepcomp added (absent from ``old``) is no difference while it has
    its default (found at the same place in ``defaults``): upgrading keeps runs resumable."""
    if isinstance(old, dict) and isinstance(new, dict):
        defaults = defaults if isinstance(defaults, dict) else {}
        for k in sorted(set(old) | set(new), key=str):
            if k in new and k not in old and k in defaults and new[k] == defaults[k]:
                continue
            if k not in old or k not in new:
                return f"{path}{k} is {'set' if k in new else 'unset'} now"
            d = _first_difference(old[k], new[k], f"{path}{k}.", defaults.get(k))
            if d:
                return d
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        defaults = defaults if isinstance(defaults, list) and len(defaults) == len(new) \
            else [None] * len(new)
        for i, (o, n, d) in enumerate(zip(old, new, defaults)):
            diff = _first_difference(o, n, f"{path}{i}.", d)
            if diff:
                return diff
        return None
    if old != new and not _same_number(old, new):
        return f"{path.rstrip('.')} was {json.dumps(old)[:60]}, is {json.dumps(new)[:60]} now"
    return None


def _same_number(a, b) -> bool:
    """A number and its text are the same setting (0.9 given in Python, '0.9' on the command
    line): configs keep a setting as it was given."""
    if isinstance(a, str) == isinstance(b, str):
        return False
    text, num = (a, b) if isinstance(a, str) else (b, a)
    if not isinstance(num, (int, float)) or isinstance(num, bool):
        return False
    try:
        return float(text) == float(num)
    except ValueError:
        return False


class Checkpoint:
    """The resumable checkpoint of one stage at ``path`` (by convention ``OUTPUT.ckpt``)."""

    def __init__(self, path: str, fingerprint: dict, restart: bool = False, log=print,
                 defaults: dict | None = None):
        self.path, self.fingerprint, self.log = os.fspath(path), fingerprint, log
        self.defaults = defaults     # the fingerprint's settings at their defaults (see above)
        # Seconds the stage ran before this run (stored in the checkpoint), and when this run
        # began: a resumed stage's wall time adds up over its runs.
        self.before, self._t0 = 0.0, time.perf_counter()
        if restart and os.path.exists(self.path):
            if dist.is_main():
                os.unlink(self.path)
            dist.barrier()
            log(f"--restart: discarded {self.path}")

    def load(self) -> dict | None:
        """The saved state, or None when there is no checkpoint. A checkpoint of other settings
        is an error that names the first difference."""
        if not os.path.exists(self.path):
            return None
        try:
            obj = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{self.path}: not a readable resume checkpoint ({type(e).__name__}); "
                                  "run with --restart to discard it") from None
        if not isinstance(obj, dict) or obj.get("format") != CKPT_FORMAT:
            raise CheckpointError(f"{self.path}: not a deepcomp resume checkpoint; "
                                  "run with --restart to discard it")
        diff = _first_difference(obj.get("fingerprint"), self.fingerprint, defaults=self.defaults)
        if diff:
            raise ResumeMismatchError(f"{self.path} was made by other settings ({diff}): "
                                      "run the same command to resume, or --restart to discard it")
        self.before = float(obj.get("elapsed", 0.0))
        return obj["state"]

    def elapsed(self) -> float:
        """Seconds the stage has run, over every run of it so far."""
        return self.before + time.perf_counter() - self._t0

    def save(self, state: dict) -> None:
        obj = {"format": CKPT_FORMAT, "fingerprint": self.fingerprint, "state": state,
               "elapsed": self.elapsed()}
        atomic_write(self.path, lambda f: torch.save(obj, f))

    def remove(self) -> None:
        if dist.is_main() and os.path.exists(self.path):
            os.unlink(self.path)
        dist.barrier()
