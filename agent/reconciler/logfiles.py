"""Service and build log files: size-based rotation, and reading what is new since last time.

Services write their log with O_APPEND straight to the file (so they keep logging while
the reconciler is down); rotation therefore copies and truncates, which is safe with
O_APPEND writers. `LogCursor` remembers how far each file was read, so the reconciler can
ship only new output to the control plane and move on only once it was accepted. What it
returns has secret values redacted (`redact.Redactor`); the file itself is left as written.
"""

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from agent.reconciler.redact import Redactor
from agent.schema.report import LogChunk

MAX_LOG_BYTES = 10 * 1024 * 1024
KEEP_ROTATED = 3
CHUNK_BYTES = 64 * 1024
BACKLOG_BYTES = 16 * 1024  # on start, ship this much of an existing log for context


def rotate_if_large(path: Path, max_bytes: int = MAX_LOG_BYTES, keep: int = KEEP_ROTATED) -> bool:
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for i in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{i + 1}"))
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    with open(path, "r+b") as f:
        f.truncate(0)
    return True


@dataclass
class LogCursor:
    offsets: dict[Path, int] = field(default_factory=dict)

    def read_new(self, path: Path, redactor: Redactor | None = None) -> tuple[str, int] | None:
        """New text of `path` since the last `advance` (at most CHUNK_BYTES), secrets
        redacted, and the offset to advance to once it was delivered; None when nothing is
        new (or only the possible start of a secret, held back for the next read)."""
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        offset = self.offsets.get(path)
        if offset is None:
            offset = max(0, size - BACKLOG_BYTES)
            self.offsets[path] = offset
        if size < offset:  # rotated or truncated: start again from the top
            offset = 0
            self.offsets[path] = 0
        if size == offset:
            return None
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(CHUNK_BYTES)
        if redactor:
            data = data[: redactor.safe_length(data)]
            if not data:
                return None
            return redactor.redact(data).decode("utf-8", errors="replace"), offset + len(data)
        return data.decode("utf-8", errors="replace"), offset + len(data)

    def advance(self, path: Path, offset: int) -> None:
        self.offsets[path] = offset


@dataclass(frozen=True)
class LogSource:
    """One log file to ship: a service's run output or its last build's."""

    service: str
    stream: str  # run | build
    commit: str | None
    path: Path


def collect_chunks(
    cursor: LogCursor, sources: list[LogSource], redactor: Redactor | None
) -> tuple[list[LogChunk], list[tuple[Path, int]]]:
    """What is new in each source, and the offsets to advance to once it was delivered."""
    chunks: list[LogChunk] = []
    advances: list[tuple[Path, int]] = []
    for src in sources:
        new = cursor.read_new(src.path, redactor)
        if new is not None:
            chunks.append(LogChunk(src.service, src.stream, src.commit, new[0]))
            advances.append((src.path, new[1]))
    return chunks, advances
