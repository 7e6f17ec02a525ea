"""What a package may hold and what loading it checks (the runtime and `edgelm info` call `verify`).

    paths     every path the manifest names (graph files, tokenizer, rotary table, context binaries, the keys of
              `files`) is relative, normalised, inside the package folder and a regular file: anything else
              is a PackageError before a file is opened
    listing   every file the manifest references is listed in `files` (so it has a hash), and every file in the
              folder is listed (a graph's external data lives beside it, and onnxruntime opens what the graph
              names), edgelm's own bookkeeping aside
    sizes     always
    hashes    sha256 of every listed file, by default; a file whose (size, mtime, ctime, inode, device) matches
              what an earlier load hashed is not hashed again (a stamp per file in the user's cache folder,
              $EDGELM_CACHE_DIR or ~/.cache/edgelm): a 1 GB package is hashed once, not at every start.
              ctime is what makes the stamp hold against an edit in place: a file's owner can put back its
              size, mtime and inode (`touch -r`, `os.utime`), but any write, utime or chmod sets ctime to the
              current time and no user can set it back. The stamp is a cache, not a seal: it trusts the
              machine's clock and whoever can write the cache file; "full" (`--verify full`) rehashes
              everything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from edgelm.errors import PackageError, UsageError

if TYPE_CHECKING:
    from edgelm.manifest import Manifest


def referenced_files(m: Manifest) -> dict[str, str]:
    """Manifest field -> the package file it names."""
    refs = {"model_file": m.model_file, "tokenizer_file": m.tokenizer_file}
    if m.static is not None:
        s = m.static
        if s.portable:
            refs.update({"static.prefill_file": s.prefill_file, "static.decode_file": s.decode_file})
        refs.update({"static.rotary_file": s.rotary_file, "static.embedding_file": s.embedding_file,
                     "static.embedding_scales_file": s.embedding_scales_file})
        refs.update({f"static.context_models.{role}": name for role, name in s.context_models.items()})
    return refs


def confined(folder: Path, name: str, field: str) -> Path:
    """`folder / name` if `name` is a plain relative path inside the package, else PackageError."""
    pure = PurePosixPath(name) if isinstance(name, str) else None
    if (pure is None or not name or "\\" in name or "\0" in name or pure.is_absolute()
            or any(part in ("", ".", "..") for part in name.split("/"))):
        raise PackageError(f"{field} {name!r} in the manifest is not a plain relative path inside the package; "
                           "re-export the package")
    path = folder / name
    root = folder.resolve()
    if not path.resolve().is_relative_to(root):
        raise PackageError(f"{field} {name!r} leads outside the package folder (a link?); re-export the package")
    return path


def verify(m: Manifest, folder: str | Path, hashes: bool | str = True) -> None:
    """Check paths, listing, sizes and (unless `hashes` is False) hashes; PackageError on the first problem.
    `hashes`: True (hash, reusing stamps of unchanged files), "full" (hash everything), False (sizes only)."""
    from edgelm.manifest import NOT_CONTENT, sha256_file

    if not (hashes is True or hashes is False or hashes == "full"):
        raise UsageError(f"verify must be True, False or 'full', not {hashes!r}")
    folder = Path(folder)
    for field, name in referenced_files(m).items():
        confined(folder, name, field)
        if name not in m.files:
            raise PackageError(f"{field} {name!r} is not listed in the manifest's files (it has no hash); "
                               "re-export the package")
    for name in m.files:
        path = confined(folder, name, "files entry")
        if path.is_symlink() or not path.is_file():
            raise PackageError(f"package file {path} is missing or not a regular file; re-export the package")
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}
    unlisted = sorted(on_disk - set(m.files) - set(NOT_CONTENT))
    if unlisted:
        raise PackageError(f"{folder / unlisted[0]} is in the package but not in its manifest"
                           f"{f' (and {len(unlisted) - 1} more)' if len(unlisted) > 1 else ''}: remove it, or "
                           "re-export the package")
    stamps = Stamps() if hashes is True else None
    for name, entry in m.files.items():
        path = folder / name
        stat = path.stat()
        if stat.st_size != entry.bytes:
            raise PackageError(f"package file {path} has the wrong size (truncated copy?); re-export")
        if not hashes or (stamps is not None and stamps.matches(path, stat, entry.sha256)):
            continue
        if sha256_file(path) != entry.sha256:
            raise PackageError(f"package file {path} fails its sha256 check (changed since export); re-export")
        if stamps is not None:
            stamps.record(path, stat, entry.sha256)
    if stamps is not None:
        stamps.save()


class Stamps:
    """sha256 of files already verified, keyed by absolute path and checked against (size, mtime_ns, ctime_ns,
    inode, device)."""

    def __init__(self):
        base = os.environ.get("EDGELM_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or
                                                          Path.home() / ".cache") / "edgelm"
        self.path = Path(base) / "verified.json"
        try:
            self.data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(self.data, dict):
                self.data = {}
        except (OSError, ValueError):
            self.data = {}
        self.changed = False

    @staticmethod
    def _key(stat) -> list:
        return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]

    def matches(self, path: Path, stat, sha256: str) -> bool:
        return self.data.get(str(path.resolve())) == [*self._key(stat), sha256]

    def record(self, path: Path, stat, sha256: str) -> None:
        self.data[str(path.resolve())] = [*self._key(stat), sha256]
        self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        try:  # best effort: an unwritable cache only means hashing again next time
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".verified-{os.getpid()}.json")
            tmp.write_text(json.dumps(self.data), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            pass
