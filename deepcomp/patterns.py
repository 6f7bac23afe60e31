"""Per-layer settings: ``'*=0.75,conv1=0.3,linear=0.5'`` (Distiller's scheme, with globs).

A setting string is a plain value (``0.75``, for every layer) or comma-separated
``PATTERN=VALUE`` pairs. A pattern is a glob matched against the layer name (the parameter
name without ``.weight``, e.g. ``layer1.0.conv1``) or the full parameter name; ``first`` and
``last`` name the first and last prunable layers (the first convolution and the classifier,
the most sensitive ones). ``*`` is the default. When several patterns match, the last written wins.
"""
from __future__ import annotations

import fnmatch
from typing import Callable

from .errors import UsageError

__all__ = ["LayerSetting", "parse_setting", "resolve_setting"]

_UNSET = object()      # a layer that no pattern names: it takes the caller's default


class LayerSetting:
    def __init__(self, pairs: list[tuple[str, object]], default=None):
        self.pairs = pairs
        self.default = default

    def __repr__(self):
        return ",".join(f"{p}={v}" for p, v in self.pairs) or f"*={self.default}"

    def resolve(self, names: list[str]) -> dict[str, object]:
        """The value for every parameter name in ``names`` (given in model order)."""
        out = {}
        layers = [n[: -len(".weight")] if n.endswith(".weight") else n for n in names]
        for i, (name, layer) in enumerate(zip(names, layers)):
            value = self.default
            for pat, v in self.pairs:
                if pat == "*" or (pat == "first" and i == 0) or (pat == "last" and i == len(names) - 1) \
                        or fnmatch.fnmatchcase(layer, pat) or fnmatch.fnmatchcase(name, pat):
                    value = v
            if value is None:
                raise UsageError(f"no setting for layer {layer!r}: add a '*=VALUE' default")
            out[name] = value
        return out

    def unused(self, names: list[str]) -> list[str]:
        """Patterns that match no layer: almost always a typo worth an error."""
        layers = [n[: -len(".weight")] if n.endswith(".weight") else n for n in names]
        return [p for p, _ in self.pairs if p not in ("*", "first", "last")
                and not any(fnmatch.fnmatchcase(x, p) for x in layers + names)]


def parse_setting(text, convert: Callable[[str], object] = float, what: str = "value",
                  default=None) -> LayerSetting:
    """Parse ``'0.75'`` or ``'*=0.75,conv1=0.3'``; numbers pass through unchanged."""
    if isinstance(text, LayerSetting):
        return text
    if isinstance(text, (int, float)):
        return LayerSetting([("*", text)])
    if isinstance(text, dict):
        return LayerSetting(list(text.items()), default)
    pairs = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        pat, eq, val = part.rpartition("=")
        if not eq:
            pat, val = "*", part
        pat = pat.strip()
        try:
            pairs.append((pat, convert(val.strip())))
        except ValueError:
            raise UsageError(f"bad {what} {val.strip()!r} for {pat!r} in {text!r}") from None
    if not pairs and default is None:
        raise UsageError(f"empty per-layer setting {text!r}")
    return LayerSetting(pairs, default)


def _layer(name: str) -> str:
    return name[: -len(".weight")] if name.endswith(".weight") else name


def resolve_setting(text, names: list[str], what: str, convert: Callable[[str], object],
                    valid: Callable[[object], bool], allowed: str,
                    default: Callable[[str], object] | None = None) -> dict[str, object]:
    """The value of every layer of ``names`` under ``text`` (one value, or ``PATTERN=VALUE``
    pairs), each checked by ``valid``. A layer that no pattern names takes ``default(name)``
    (without a default, every layer needs one). Errors, one style for every option: a pattern
    that matches no layer, a value out of range (``allowed`` says the range), no layer at all.
    ``what`` is the option's name, e.g. ``bits`` for ``--bits``."""
    if not names:
        raise UsageError(f"--{what}: the model has no layer it applies to")
    spec = parse_setting(text, convert, what, default=_UNSET if default else None)
    bad = spec.unused(names)
    if bad:
        few = ", ".join(_layer(n) for n in names[:8]) + (" ..." if len(names) > 8 else "")
        raise UsageError(f"--{what}: pattern {bad[0]!r} matches no layer; layers are {few}")
    out = {}
    for n, v in spec.resolve(names).items():
        v = default(n) if v is _UNSET else v
        if not valid(v):
            raise UsageError(f"--{what}: {v!r} for {_layer(n)} is out of range ({allowed})")
        out[n] = v
    return out
