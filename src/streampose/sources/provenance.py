"""Provenance: an append-only record of every video a run used, for attribution and dedupe.

Each line of `provenance.jsonl` is one JSON object: provider, id, page URL, licence, author,
attribution (Commons' own `Attribution`, `AttributionRequired` and `UsageTerms` where given), the
rendition downloaded, bytes and frames labelled. Only whitelisted metadata fields are written, so pixels and keys
can never end up there. The file is opened in append mode and each line flushed (and synced),
so a crash loses at most the line being written; a resumed run reads `used_ids()` to skip
search results it has already trained on.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from pathlib import Path
from typing import IO

from streampose.files import output_path, reported
from streampose.sources.base import Video, VideoRef

FILENAME = "provenance.jsonl"
FIELDS = (
    "provider",
    "page_url",
    "licence",
    "licence_url",
    "author",
    "author_url",
    "attribution",
    "attribution_required",
    "usage_terms",
    "title",
    "rendition",
    "width",
    "height",
    "duration",
    "query",
)


def entry(video: Video | VideoRef, frames: int, **extra: object) -> dict:
    """The provenance line of one video: whitelisted metadata only, never pixels or keys."""
    meta = video.meta
    item: dict[str, object] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "id": video.id}
    item.update({k: meta[k] for k in FIELDS if meta.get(k) is not None})
    if isinstance(video, Video):
        item["bytes"] = len(video.data)
    elif meta.get("bytes") is not None:
        item["bytes"] = meta["bytes"]
    item["frames"] = int(frames)
    item.update(extra)
    return item


class PendingEntries:
    """Provenance entries held in memory until the main rank of a distributed run writes them."""

    def __init__(self, **extra: object) -> None:
        self._extra = extra
        self._items: list[dict] = []
        self._lock = threading.Lock()

    def record(self, video: Video | VideoRef, frames: int) -> dict:
        item = entry(video, frames, **self._extra)
        with self._lock:
            self._items.append(item)
        return item

    def drain(self) -> list[dict]:
        with self._lock:
            items, self._items = self._items, []
        return items


class ProvenanceLog:
    """`ProvenanceLog(path)`: `path` is the .jsonl file, or a folder that gets `provenance.jsonl`."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path / FILENAME if path.is_dir() or not path.suffix else path
        self._lock = threading.Lock()
        self._file: IO[str] | None = None

    def used_ids(self) -> frozenset[str]:
        """Ids recorded so far (an unreadable line, such as a crash's half-written last one, is skipped)."""
        ids: set[str] = set()
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return frozenset()
        bad = 0
        for line in lines:
            if not line.strip():
                continue
            try:
                ids.add(str(json.loads(line)["id"]))
            except (ValueError, KeyError, TypeError):
                bad += 1
        if bad:
            warnings.warn(f"{self.path}: skipped {bad} unreadable line(s)", stacklevel=2)
        return frozenset(ids)

    def record(self, video: Video | VideoRef, frames: int, **extra: object) -> dict:
        """Append one line for a video that was used; safe to call from several threads."""
        return self.write(entry(video, frames, **extra))

    def write(self, item: dict) -> dict:
        """Append one entry made by `entry` (on another rank, perhaps)."""
        line = json.dumps(item, ensure_ascii=False, default=str) + "\n"
        with self._lock, reported(self.path):
            handle = self._open()
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        return item

    def _open(self) -> IO[str]:
        if self._file is None:
            output_path(self.path)
            # A crash can leave a last line without its newline: start ours on a fresh line.
            needs_newline = False
            if self.path.exists() and self.path.stat().st_size:
                with self.path.open("rb") as f:
                    f.seek(-1, os.SEEK_END)
                    needs_newline = f.read(1) != b"\n"
            self._file = self.path.open("a", encoding="utf-8")
            if needs_newline:
                self._file.write("\n")
        return self._file

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> ProvenanceLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ProvenanceLog({str(self.path)!r})"
