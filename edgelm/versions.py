"""Installed versions of named distributions, for manifests and benchmark provenance."""

from __future__ import annotations

import importlib.metadata


def package_versions(*names: str) -> dict[str, str]:
    """{name: version} for each installed distribution in `names`; missing ones are left out."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out
