"""What the offloader needs from its caller: the deadline rule and the recorder's delete."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Protocol


class DeadlinePolicy(Protocol):
    """When footage recorded until `recorded_end_utc` must be stored (regulation deadline)."""

    def due(self, recorded_end_utc: datetime, /) -> datetime: ...


class Wiper(Protocol):
    """Deletes one file from the recorder, guarded by size and BLAKE3 (the session's
    protocol delete). `name` is the path relative to the storage root, as listed.

    `listed()` asks the recorder again which files it holds now: a delete the recorder
    answered "deleted" is recorded as a wipe only once the file is absent from it."""

    async def delete(self, name: bytes, size: int, blake3_digest: bytes) -> None: ...

    async def listed(self) -> Collection[bytes]: ...
