"""Write an output folder atomically: build it in a sibling staging folder, rename it into place on success.

On any failure the staging folder is removed and an existing output folder is left untouched, so a failed
export never leaves a half-written package behind. What `--force` may replace is narrow: an existing edgelm
package, never the source model's folder, an ancestor of it or of the working directory, nor any other
folder. Staging and temporary folders carry a marker naming the process that made them; a later export
removes the ones whose process is gone (left by a kill -9).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from edgelm.paths import path_problem
from edgelm.errors import EdgeLMError, ExportError, OutputExistsError, PackageError, first_line
from edgelm.manifest import MANIFEST_NAME, OWNER_MARKER, Manifest



def is_package(folder: Path) -> bool:
    """A folder holding a valid edgelm.json (one Manifest.load accepts)."""
    try:
        Manifest.load(folder)
    except (PackageError, OSError):
        return False
    return True


def check_output(out: Path, force: bool, protected: tuple[Path, ...] = ()) -> None:
    """Refuse, before any work, an output location the export may not write or replace."""
    out = out.absolute()
    if path_problem(out) == "is a symlink loop":
        raise ExportError(f"-o {out} is a symlink loop; choose another output folder")
    resolved = Path(os.path.realpath(out))
    for keep in (Path.cwd(), *protected):
        keep = Path(os.path.realpath(keep))  # never raises, unlike Path.resolve() on a symlink loop
        if resolved == keep or resolved in keep.parents:
            what = "the working directory" if keep == Path.cwd().resolve() else f"the source {keep}"
            raise ExportError(f"-o {out} is {what} or holds it; choose an output folder of its own")
    if out.exists() and not out.is_dir():
        raise ExportError(f"-o {out} is a file, not a folder; choose another output folder")
    if out.exists() and not force:
        raise OutputExistsError(out)
    if out.exists() and not is_package(out):
        raise ExportError(f"--force replaces only an edgelm package, and {out} is not one (no valid {MANIFEST_NAME}); "
                          "choose another -o or remove it yourself")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:  # the folders to be made go in the nearest one there
        parent = parent.parent
    try:  # the real test (permission bits say little to root, and /proc or a read-only mount refuse anyway)
        os.rmdir(tempfile.mkdtemp(prefix=".edgelm-probe-", dir=parent))
    except OSError as exc:
        raise ExportError(f"cannot create folders in {parent} ({exc.strerror}); choose an -o in a writable folder") \
            from None


def owned_folder(parent: Path, prefix: str, stale: str) -> Path:
    """A new folder `prefix*` in `parent` with the owner marker; stale marked folders matching the glob `stale`
    (any export's, not only this output's) are removed first."""
    remove_stale(parent, stale)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    (folder / OWNER_MARKER).write_text(json.dumps({"pid": os.getpid()}), encoding="utf-8")
    return folder


def remove_stale(parent: Path, pattern: str) -> None:
    """Remove folders matching `pattern` in `parent` whose marker (OWNER_MARKER: JSON {"pid": ...}) names a
    process that no longer runs."""
    for folder in parent.glob(pattern):
        try:
            pid = json.loads((folder / OWNER_MARKER).read_text(encoding="utf-8"))["pid"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # no marker of ours: not ours to remove
        if isinstance(pid, int) and not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def temporary_folder(prefix: str) -> Iterator[Path]:
    """A marked temporary folder (GGUF conversion, synthetic model), removed on exit or by a later export."""
    folder = owned_folder(Path(tempfile.gettempdir()), prefix, "edgelm-*")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def staged_output(out: str | Path, force: bool = False, protected: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces `out` (see check_output for what may be replaced)."""
    out = Path(out).absolute()
    check_output(out, force, protected)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = owned_folder(out.parent, f".{out.name}.partial-", ".*.partial-*")
    try:
        yield stage
        check_output(out, force, protected)  # the folder may have appeared while we worked
        (stage / OWNER_MARKER).unlink()
        _apply_umask(stage)
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


def _apply_umask(folder: Path) -> None:
    """mkdtemp makes 0700; a package gets the user's usual modes (0755 folders / 0644 files under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    folder.chmod(0o777 & ~mask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)
