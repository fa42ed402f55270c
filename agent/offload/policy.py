"""What the offloader needs from its caller: the deadline rule and the recorder's delete."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class DeadlinePolicy(Protocol):
    """When footage recorded until `recorded_end_utc` must be stored (regulation deadline)."""

    def due(self, recorded_end_utc: datetime, /) -> datetime: ...


class Wiper(Protocol):
    """Deletes one file from the recorder, guarded by size and BLAKE3 (the session's
    protocol delete). `name` is the path relative to the storage root, as listed."""

    async def delete(self, name: bytes, size: int, blake3_digest: bytes) -> None: ...
