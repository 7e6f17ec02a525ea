"""Typed errors. Every message says what went wrong and what to do about it.

The CLI prints `edgelm: error: <message>` on one line and exits with `EdgeLMError.exit_code`.
"""


class EdgeLMError(Exception):
    """Base of every error edgelm raises on purpose."""

    exit_code = 2


class ModelSourceError(EdgeLMError):
    """The model folder to export is missing or is not a Hugging Face model folder."""


class UnsupportedArchitecture(EdgeLMError):
    """Neither the native builder nor optimum can export the model's `architectures` entry."""

    def __init__(self, name: str, supported: list[str], detail: str | None = None):
        self.name = name
        self.supported = sorted(supported)
        why = f"; optimum failed: {detail}" if detail else ""
        super().__init__(
            f"architecture {name!r} is not supported: the native builder knows {', '.join(self.supported)}{why}"
        )


class OutputExistsError(EdgeLMError):
    """The output folder exists and --force was not given."""

    def __init__(self, path):
        super().__init__(f"output folder {path} already exists; pass --force to replace it")


class ExportError(EdgeLMError):
    """The export pipeline failed; nothing was written to the output folder."""


class QuantizationError(ExportError):
    """An unknown quantization mode or a quantization step that failed."""


class PackageError(EdgeLMError):
    """A package folder is missing, incomplete, corrupted or made by an incompatible edgelm."""


class ProviderUnavailable(EdgeLMError):
    """The requested execution provider is not available in this onnxruntime installation."""


class GenerationError(EdgeLMError):
    """Generation cannot proceed, e.g. the prompt does not fit the context window."""


class BenchError(EdgeLMError):
    """A benchmark configuration that cannot be run as asked."""


class UsageError(EdgeLMError):
    """Arguments (command line or Python API) out of range or contradicting each other."""


def first_line(exc: BaseException, limit: int | None = 300) -> str:
    """The first line of a foreign exception's message (at most `limit` characters), or "" if it has none.

    For wrapping errors from onnxruntime, optimum and plugins into one-line typed errors."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else "")[:limit]


class PlanError(EdgeLMError):
    """A fleet plan that cannot be run as written (an unknown field, an empty matrix, a resource no worker has)."""
