"""Where the fleet's packages live and how they reach the machine that measures them.

A package is content-addressed: its key hashes the source's content (every file's sha256; a synthetic preset's
name and seed), the variant's export options and edgelm's version, so rows that share a package share one export,
and a re-run finds it done. Packages move as files, verified against their manifest's sha256 on arrival:
- through the plan's `store` folder when the measuring worker sees it (one machine, or a folder every machine
  mounts): the way for real packages, which are hundreds of MB to GBs;
- through Dask's own worker-to-worker transfer when the worker does not see the folder and the package is at most
  `transfer_mib` (default 64 MiB): Dask holds a transferred object whole in both workers' memory, so larger
  packages are refused by name instead (give every machine the store folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from edgelm import __version__
from edgelm.errors import PackageError, PlanError
from edgelm.fleet.plan import Source, Variant
from edgelm.manifest import FORMAT_VERSION, MANIFEST_NAME, Manifest, sha256_file

MIB = 1 << 20


@dataclass(frozen=True)
class PackageRef:
    """What an export task hands to the tasks after it."""

    key: str
    folder: str  # the package on the exporting worker's disk (the store)
    mib: float
    host: str  # the exporting machine
    blob: tuple[tuple[str, bytes], ...] | None = None  # (relative path, bytes) when small enough to travel
    reused: bool = False  # the store already held it (an earlier run or another row)


def source_fingerprint(source: Source, cache: Path | None = None) -> dict:
    """What the package key hashes for a source: a preset and seed, or every file's sha256 (cached by size and
    mtime in `cache`, a JSON file, so a re-run does not reread GBs)."""
    if source.synthetic:
        return {"synthetic": source.synthetic, "seed": source.seed}
    path = Path(source.model)
    if not path.exists():
        raise PlanError(f"source {source.name!r}: {path} does not exist on the machine running the plan")
    files = sorted(p for p in (path.rglob("*") if path.is_dir() else [path]) if p.is_file())
    known = json.loads(cache.read_text()) if cache and cache.is_file() else {}
    digests = {}
    for f in files:
        st = f.stat()
        stamp = f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        known[stamp] = known.get(stamp) or sha256_file(f)
        digests[str(f.relative_to(path)) if path.is_dir() else f.name] = known[stamp]
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(known, sort_keys=True))
        os.replace(tmp, cache)
    return {"files": digests}


def package_key(fingerprint: dict, variant: Variant) -> str:
    blob = json.dumps({"source": fingerprint, "export": asdict(variant)["options"], "edgelm": __version__,
                       "format": FORMAT_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def describe(key: str, folder: Path, transfer_mib: float, reused: bool) -> PackageRef:
    """The reference to a finished package in the store (its files attached when small enough to travel)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files)
    blob = None
    if size <= transfer_mib * MIB:
        blob = tuple((str(p.relative_to(folder)), p.read_bytes()) for p in files)
    return PackageRef(key, str(folder), size / MIB, socket.gethostname(), blob, reused)


def complete(folder: Path) -> bool:
    """A finished package (an export writes its manifest last, by renaming the whole folder into place)."""
    try:
        Manifest.load(folder).verify(folder, hashes=True)
    except PackageError:
        return False
    return True


def materialize(ref: PackageRef, cache: Path) -> Path:
    """The package on this worker: the store's folder if this machine sees it, else the transferred copy,
    written to `cache/KEY` (staged, then renamed); both verified against the manifest's sha256 first."""
    here = Path(ref.folder)
    if (here / MANIFEST_NAME).is_file():
        Manifest.load(here).verify(here, hashes=True)
        return here
    local = cache / ref.key
    if (local / MANIFEST_NAME).is_file():
        Manifest.load(local).verify(local, hashes="full")
        return local
    if ref.blob is None:
        raise PackageError(
            f"package {ref.key} ({ref.mib:.0f} MiB, exported on {ref.host} to {ref.folder}) is not on this "
            f"machine and is too big to travel through Dask; give every worker the plan's store folder")
    stage = cache / f".{ref.key}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    for name, data in ref.blob:
        path = stage / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    try:
        Manifest.load(stage).verify(stage, hashes="full")  # arrived as written, or refused
    except PackageError:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    os.replace(stage, local)
    return local
