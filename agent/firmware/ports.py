"""What the firmware updater needs of a recorder link (`firmware_bridge.client.RecorderClient`)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class StatusLike(Protocol):
    @property
    def running_version(self) -> str: ...
    @property
    def active_slot(self) -> str: ...
    @property
    def last_result(self) -> int: ...  # 0 none, 1 ok, 2 rolled back, 3 self-test failed
    @property
    def staged_offset(self) -> int: ...
    @property
    def staged_size(self) -> int: ...


class BeginLike(Protocol):
    @property
    def offset(self) -> int: ...
    @property
    def chunk_max(self) -> int: ...


@runtime_checkable
class FirmwareLink(Protocol):
    async def firmware_status(self) -> StatusLike: ...
    async def firmware_begin(self, manifest_bytes: bytes, signature: bytes) -> BeginLike: ...
    async def firmware_chunk(self, offset: int, data: bytes) -> int: ...
    async def firmware_commit(self) -> None: ...
    async def reboot(self) -> None: ...


LAST_RESULT_OK = 1
LAST_RESULT_ROLLED_BACK = 2
LAST_RESULT_SELF_TEST_FAILED = 3
