"""Per-layer settings: ``'*=0.75,conv1=0.3,linear=0.5'`` (Distiller's scheme, with globs).

A setting string is a plain value (``0.75``, for every layer) or comma-separated
``PATTERN=VALUE`` pairs. A pattern is a glob matched against the layer name (the parameter
name without ``.weight``, e.g. ``layer1.0.conv1``) or the full parameter name; ``first`` and
``last`` name the first and last prunable layers (the first convolution and the classifier,
the most sensitive ones). ``*`` is the default. When several patterns match, the last written wins.
"""
from __future__ import annotations

import fnmatch
import numbers
from typing import Callable

from .errors import UsageError

__all__ = ["LayerSetting", "as_setting", "parse_setting", "recorded", "resolve_setting",
           "setting_text"]

_UNSET = object()      # a layer that no pattern names: it takes the caller's default


class LayerSetting:
    """``PATTERN=VALUE`` pairs (the last match wins) and a default. ``source`` is what it was
    made from (the text, or a ``{pattern: value}`` dict), kept so that records and run
    identities hold the setting as it was given; ``text`` is that as a string."""

    def __init__(self, pairs: list[tuple[str, object]], default=None, source=None):
        self.pairs = pairs
        self.default = default
        self.source = source

    @property
    def text(self) -> str | None:
        return None if self.source is None else setting_text(self.source)

    def __repr__(self):
        if self.text is not None:
            return self.text
        return ",".join(f"{p}={v}" for p, v in self.pairs) or f"*={self.default}"

    def __eq__(self, other):
        return isinstance(other, LayerSetting) and (self.source, self.pairs, self.default) == \
            (other.source, other.pairs, other.default)

    __hash__ = None

    def single(self):
        """The value of a setting written as one plain value (``'0.9'``); None for patterns."""
        plain = self.text is not None and "=" not in self.text and len(self.pairs) == 1
        return self.pairs[0][1] if plain else None

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
        if default is not None and text.default is None:      # the caller's default for layers
            return LayerSetting(text.pairs, default, text.source)     # no pattern names
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
    return LayerSetting(pairs, default, source=str(text))


def as_setting(value, what: str = "value", convert: Callable[[str], object] = float):
    """A setting as a config holds it, parsed once: a number stays the number it is (an
    integral one for ``convert=int``); text (``'0.9'``, ``'*=0.9,first=0.5'``) or a ``{pattern:
    value}`` dict becomes a LayerSetting that remembers it. Bad input is a UsageError here."""
    if isinstance(value, LayerSetting):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = value.item() if hasattr(value, "item") else value         # numpy scalars
        if convert is int:
            if not float(value).is_integer():
                raise UsageError(f"{what} must be a whole number, got {value!r}")
            return int(value)
        return value
    if isinstance(value, dict):
        return LayerSetting(parse_setting(setting_text(value), convert, what).pairs,
                            source=dict(value))
    if isinstance(value, str):
        return parse_setting(value, convert, what)
    raise UsageError(f"{what} must be a number, a {{pattern: value}} dict or per-layer text "
                     f"('PATTERN=VALUE,...'), got {value!r}")


def recorded(value):
    """A setting as records and run identities hold it: as it was given (a number, the text,
    the dict), so that parsing it changes nothing that was written before."""
    return value.source if isinstance(value, LayerSetting) else value


def setting_text(value) -> str:
    """A setting as text: a number as Python writes it, a dict as ``pattern=value`` pairs, a
    parsed setting as it was written."""
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


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
