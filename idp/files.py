"""Files the bridge reads once and keeps what it made of them (keys, bind passwords, CA bundles): how to tell
that one was replaced since."""

from __future__ import annotations

from pathlib import Path


def read_bounded(path: Path, limit: int) -> bytes | None:
    """The file's bytes, or None when it holds more than ``limit``: read, not judged by its size, which says
    nothing of /dev/zero or a pipe (they would fill the memory)."""
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    return data if len(data) <= limit else None


def stamp(path: Path | None) -> tuple[int, int, int, int] | None:
    """What changes when a file is rewritten or replaced (a renamed-in file, as a rotated Kubernetes Secret's
    symlink swap gives, has a new inode; a copy that keeps the mtime still changes the ctime). None for no file, or
    one that cannot be read: whoever reads it reports that."""
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
