"""Every error deepcomp raises on purpose: one base class, one line of message each.

The CLI prints ``str(err)`` and exits 1 for any :class:`DeepcompError`; nothing below
should ever need a traceback to be understood.
"""


class DeepcompError(Exception):
    """Base class of all deliberate deepcomp errors."""


class UsageError(DeepcompError):
    """A bad argument: unknown model, malformed spec string, impossible setting (CLI exit 2)."""


class DataError(DeepcompError):
    """A data set that is missing or not in the expected layout."""


class CheckpointError(DeepcompError):
    """A checkpoint or stage file that cannot be read or does not fit the architecture."""


class OutputError(DeepcompError):
    """An output file that cannot be written (a missing or read-only folder, a directory)."""


class UnknownModelError(UsageError):
    """A model name the registry does not know, or a model reference that cannot be imported."""


class UntrustedModelError(UsageError):
    """A file names a ``module:factory`` model that the user has not named: not imported."""


class MissingDependencyError(DeepcompError):
    """An optional feature needs a package that is not installed (e.g. ``deepcomp-pytorch[onnx]``)."""


# --- the .dc file format (see docs/FORMAT.md) ---------------------------------------------

class FormatError(DeepcompError):
    """Base class of all errors reading a .dc file."""


class BadMagicError(FormatError):
    """The file does not start with the .dc magic bytes."""


class UnsupportedVersionError(FormatError):
    """The file's major format version is newer than this reader."""


class TruncatedFileError(FormatError):
    """The file ends before the header or a section it declares."""


class ChecksumError(FormatError):
    """A CRC32 does not match: the file was altered or damaged."""


class HeaderTooLargeError(FormatError):
    """The declared header length exceeds the reader's cap."""


class InvalidOffsetError(FormatError):
    """A section lies outside the file, overlaps another, or leaves a hole."""


class HeaderError(FormatError):
    """The header is not valid JSON or violates the header schema."""


class LimitError(HeaderError):
    """The file declares more than its own size can justify (docs/FORMAT.md, "Reader limits"):
    more elements, a larger header or a longer history than the reader's budget for it."""


class CountMismatchError(FormatError):
    """Decoded counts do not match the declared shapes."""


class UnknownArchitectureError(FormatError):
    """The file names an architecture this registry does not know."""


class UntrustedArchitectureError(UnknownArchitectureError, UntrustedModelError):
    """A .dc file names a ``module:factory`` model that the user has not named: a format error
    to the reader's callers, a usage error (exit 2) to the command line."""
