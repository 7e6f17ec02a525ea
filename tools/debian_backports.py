"""Add the backports suite of this machine's own Debian sources (for Mesa 25's Vulkan driver, `make vulkan`).

The archive is whatever this machine already uses: its configured entry for the release's main suite is
copied with the suite changed to `<codename>-backports`, so no mirror's name is written anywhere. Reads the
deb822 files (/etc/apt/sources.list.d/*.sources) and the one-line lists (/etc/apt/sources.list,
/etc/apt/sources.list.d/*.list). Prints the suite it added, or nothing (and exits 1) when no entry fits.

    python3 tools/debian_backports.py bookworm
"""

from __future__ import annotations

import sys
from pathlib import Path

APT = Path("/etc/apt")
OUT = APT / "sources.list.d" / "edgelm-backports.sources"


def deb822_entries(text: str) -> list[dict[str, str]]:
    """The stanzas of a deb822 sources file, as field -> value (comments dropped)."""
    entries, current = [], {}
    for line in text.splitlines() + [""]:
        if not line.strip():
            if current:
                entries.append(current)
            current = {}
        elif not line.startswith("#") and ":" in line and not line[0].isspace():
            key, _, value = line.partition(":")
            current[key.strip()] = value.strip()
    return entries


def one_line_entries(text: str) -> list[dict[str, str]]:
    """`deb [options] URI SUITE COMPONENTS...` lines as deb822-like fields."""
    entries = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 3 or words[0] != "deb":
            continue
        options = {}
        if words[1].startswith("["):
            end = next(i for i, w in enumerate(words) if w.endswith("]"))
            for option in " ".join(words[1:end + 1]).strip("[]").split():
                key, _, value = option.partition("=")
                options[{"signed-by": "Signed-By"}.get(key, key)] = value
            words = [words[0], *words[end + 1:]]
        entries.append({"Types": "deb", "URIs": words[1], "Suites": words[2], "Components": " ".join(words[3:]),
                        **({"Signed-By": options["Signed-By"]} if "Signed-By" in options else {})})
    return entries


def main_entry(codename: str) -> dict[str, str] | None:
    """The configured `deb` entry carrying the release's own suite (the main archive, not security)."""
    files = sorted((APT / "sources.list.d").glob("*.sources"))
    lists = [APT / "sources.list", *sorted((APT / "sources.list.d").glob("*.list"))]
    entries = [e for f in files if f != OUT for e in deb822_entries(f.read_text(encoding="utf-8", errors="replace"))]
    entries += [e for f in lists if f.is_file() for e in one_line_entries(f.read_text(encoding="utf-8", errors="replace"))]
    for entry in entries:
        if "deb" in entry.get("Types", "").split() and codename in entry.get("Suites", "").split() \
                and entry.get("Enabled", "yes").lower() != "no":
            return entry
    return None


def main(argv: list[str]) -> int:
    codename = argv[1] if len(argv) > 1 else ""
    entry = main_entry(codename) if codename else None
    if entry is None:
        return 1
    fields = {"Types": "deb", "URIs": entry["URIs"], "Suites": f"{codename}-backports",
              "Components": entry.get("Components", "main")}
    if "Signed-By" in entry:
        fields["Signed-By"] = entry["Signed-By"]
    OUT.write_text("".join(f"{k}: {v}\n" for k, v in fields.items()), encoding="utf-8")
    print(f"{codename}-backports")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
