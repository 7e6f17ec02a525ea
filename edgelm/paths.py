"""What is wrong with a path the user gave, in words: for messages that name the problem."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


def path_problem(path: str | Path, want: str = "folder") -> str | None:
    """Why `path` is not an existing `want` ("folder" or "file"), e.g. "is a symlink loop"; None when it is."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symlink loop"
        if os.path.islink(path):
            return f"is a symlink to {os.readlink(path)}, which does not exist"
        if exc.errno == errno.ENOENT:
            return "does not exist"
        if exc.errno == errno.ENOTDIR:
            return "does not exist (a part of its path is a file)"
        if exc.errno == errno.EACCES:
            return "cannot be read (permission denied)"
        return f"cannot be read ({exc.strerror})"
    if want == "folder" and not stat.S_ISDIR(mode):
        return "is a file, not a folder"
    if want == "file" and stat.S_ISDIR(mode):
        return "is a folder, not a file"
    return None
