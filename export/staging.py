"""Write an output folder atomically: build it in a sibling staging folder, rename it into place on success.

On any failure the staging folder is removed and an existing output folder is left untouched, so a failed
export never leaves a half-written package behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from edgelm.errors import EdgeLMError, ExportError, OutputExistsError, first_line


def check_output(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise OutputExistsError(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"output path {out} exists and is not a folder; choose another -o")


@contextlib.contextmanager
def staged_output(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces `out`."""
    out = Path(out).absolute()
    check_output(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
        check_output(out, force)  # the folder may have appeared while we worked
        if out.exists():
            backup = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, backup)
            os.replace(stage, out)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(stage, out)
    except EdgeLMError:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    except KeyboardInterrupt:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(stage, ignore_errors=True)
        first = first_line(exc, limit=None)
        raise ExportError(f"export failed: {type(exc).__name__}: {first}; nothing was written to {out}") from exc
