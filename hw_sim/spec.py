"""What a virtual recorder is: identity, footage, clock, battery and injected faults.

Specs are frozen values. A recorder's files are a pure function of its spec (serial +
footage), so the same spec and work directory present the same files after a replug.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from firmware_bridge.messages import COMMANDS, OFFICER_NO_WIDTH, SERIAL_WIDTH
from hw_sim.errors import SpecError
from hw_sim.fwkeys import SIM_VENDOR_PUBLIC, parse_trusted_key

if TYPE_CHECKING:
    from firmware_bridge.messages import OfficerRecord

MIB = 1 << 20

LINK_COMMANDS = COMMANDS  # names used by `Faults.silent_commands`


def _default_start_ms() -> int:
    """Recordings of a default spec start 4 hours before the current hour (UTC)."""
    hour_ms = 3_600_000
    return (int(time.time() * 1000) // hour_ms) * hour_ms - 4 * hour_ms


@dataclass(frozen=True)
class FootageSpec:
    """MP4-named footage files under DCIM/ with deterministic pseudo-random content."""

    count: int = 3
    size_bytes: int = 4 * MIB
    seed: int = 1
    # Start of the first recording (UTC ms). None: 4 h before the current hour, fixed
    # when the spec is created; pass a value for specs that must match across processes.
    start_ms: int | None = None
    gap_s: float = 600.0  # idle time between consecutive recordings
    bitrate_bps: int = 8_000_000  # recording duration = size * 8 / bitrate
    sizes: tuple[int, ...] = ()  # per-file sizes; overrides count and size_bytes
    # Officer number the recorder stamps into each file name (who held it while it
    # recorded): `<serial>_<officer>_<YYYYMMDD_HHMMSS>_<n>.MP4`; "" leaves it out.
    officer_no: str = ""

    def __post_init__(self) -> None:
        if self.start_ms is None:
            object.__setattr__(self, "start_ms", _default_start_ms())
        if self.count < 0 or self.size_bytes < 0 or any(s < 0 for s in self.sizes):
            raise SpecError("footage count and sizes must not be negative")
        if self.bitrate_bps <= 0:
            raise SpecError("footage bitrate must be positive")
        if self.officer_no and not (len(self.officer_no) <= OFFICER_NO_WIDTH
                                    and self.officer_no.isascii() and self.officer_no.isalnum()):
            raise SpecError(f"footage officer_no must be 1..{OFFICER_NO_WIDTH} ASCII "
                            "letters/digits")

    @property
    def file_sizes(self) -> tuple[int, ...]:
        return self.sizes if self.sizes else (self.size_bytes,) * self.count


@dataclass(frozen=True)
class Faults:
    """Faults injected by one virtual recorder. The default injects nothing.

    Link faults act on the serial line; file faults act on the storage and need FUSE
    (files are named by their footage index, 0-based).
    """

    # serial link
    drop_byte_prob: float = 0.0  # each outgoing byte is dropped with this probability
    garble_byte_prob: float = 0.0  # each outgoing byte is bit-flipped with this probability
    garble_replies: int = 0  # the first N reply frames each get one byte flipped
    reply_delay_s: float = 0.0  # every reply is held back this long
    silent_commands: frozenset[str] = frozenset()  # never answered (names: LINK_COMMANDS)
    refuse_auth: bool = False  # every authentication attempt fails
    list_page_delay_s: float = 0.0  # each page of the recording listing is held back this long
    list_stall_after_pages: int | None = None  # later listing pages are never answered
    seed: int = 0  # seeds the random link faults
    # device behaviour
    claimed_serial: str | None = None  # the firmware's identity claims this serial instead
    clock_set: Literal["ok", "error", "ignored"] = "ok"  # ignored: acks but keeps its time
    battery_failing: bool = False  # low health, does not charge, runs hot
    hostile_names: bool = False  # hostile entries on the storage and in the listing
    lying_delete: bool = False  # a guarded delete answers "deleted" but keeps the file
    # (file index, start_ms, end_ms): the listing claims these times for that file
    listed_times: tuple[tuple[int, int, int], ...] = ()
    control_names: bool = False  # a regular footage file whose name holds control characters
    # a newly committed firmware image fails on its trial boot: "no_boot" (rolled back) or
    # "self_test" (booted, self-test failed, rolled back); "ok" boots it
    firmware_boot: Literal["ok", "no_boot", "self_test"] = "ok"
    # storage file layer (FUSE)
    eio_at: tuple[tuple[int, int], ...] = ()  # (file index, byte offset): reads there fail
    eio_count: int | None = None  # each EIO fault fires this many times (None: always)
    unplug_at: tuple[int, int] | None = None  # (file index, byte offset): recorder unplugs
    growing: tuple[int, ...] = ()  # files that keep growing while they are read
    grow_step_bytes: int = 64 * 1024  # growth per read of a growing file
    # paths relative to the storage root (e.g. "DCIM/101"): listing them fails (EACCES)
    unlistable_dirs: tuple[str, ...] = ()
    unstatable: tuple[str, ...] = ()  # paths whose lstat fails (EIO)
    read_rate_mb_s: float | None = None  # the storage reads no faster (USB 2.0: 30-42)
    # who holds reads to that rate: "kernel" (the storage is a loop device the block layer
    # throttles, hw_sim.blockvolume; needs root), "fuse" (the FUSE view paces each read, in
    # Python), "auto" (the kernel where it can, else FUSE). Fixed at plug time.
    read_rate_by: Literal["auto", "kernel", "fuse"] = "auto"

    def __post_init__(self) -> None:
        unknown = set(self.silent_commands) - LINK_COMMANDS
        if unknown:
            raise SpecError(f"unknown command names in silent_commands: {sorted(unknown)}")
        for p in (self.drop_byte_prob, self.garble_byte_prob):
            if not 0.0 <= p <= 1.0:
                raise SpecError("fault probabilities must be within 0..1")
        if self.firmware_boot not in ("ok", "no_boot", "self_test"):
            raise SpecError(f"firmware_boot must be ok, no_boot or self_test, not "
                            f"{self.firmware_boot!r}")
        if self.clock_set not in ("ok", "error", "ignored"):
            raise SpecError(f"clock_set must be ok, error or ignored, not {self.clock_set!r}")
        if self.grow_step_bytes <= 0:
            raise SpecError("grow_step_bytes must be positive")
        if self.read_rate_mb_s is not None and not self.read_rate_mb_s > 0:
            raise SpecError("read_rate_mb_s must be positive")
        if self.read_rate_by not in ("auto", "kernel", "fuse"):
            raise SpecError(f"read_rate_by must be auto, kernel or fuse, not {self.read_rate_by!r}")
        for _, start, end in self.listed_times:
            if not (0 <= start < 2**63 and 0 <= end < 2**63):
                raise SpecError("listed times must fit the protocol (0..2**63-1 ms)")
        if self.list_page_delay_s < 0 or (self.list_stall_after_pages or 0) < 0:
            raise SpecError("list_page_delay_s and list_stall_after_pages must not be negative")
        if self.claimed_serial is not None and not 1 <= len(
                self.claimed_serial.encode("utf-8", "surrogatepass")) <= SERIAL_WIDTH:
            raise SpecError(f"claimed_serial must be 1..{SERIAL_WIDTH} bytes of UTF-8")

    @property
    def needs_fuse(self) -> bool:
        """FUSE is needed: for a file fault, or a read rate the kernel does not hold."""
        return self.file_faults or (self.read_rate_mb_s is not None
                                    and self.read_rate_by != "kernel")

    @property
    def file_faults(self) -> bool:
        """Faults only the FUSE view can inject (the read rate aside)."""
        return bool(self.eio_at or self.unplug_at is not None or self.growing
                    or self.unlistable_dirs or self.unstatable)


SIM_USB_VID = "1209"  # the simulated recorders' default USB vendor and product id
SIM_USB_PID = "d0c5"
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")


@dataclass(frozen=True)
class RecorderSpec:
    """Everything that defines one virtual recorder."""

    serial: str
    model: str = "DSJ-SIM1"
    # USB identity the dock announces (the agent's [[devices.allow]] must list it).
    usb_vid: str = SIM_USB_VID
    usb_pid: str = SIM_USB_PID
    hardware_rev: str = "A1"
    firmware: str = "1.0.0"
    officer: OfficerRecord | None = None  # None: no officer assigned
    footage: FootageSpec = field(default_factory=FootageSpec)
    clock_offset_s: float = 0.0  # recorder clock minus true UTC at plug time
    clock_drift_ppm: float = 0.0  # rate error of the recorder clock
    battery_percent: int = 95
    charge_percent_per_min: float = 1.0  # while docked
    battery_cycles: int = 120
    storage_total_bytes: int = 64 * 1000**3
    faults: Faults = field(default_factory=Faults)
    # The field history in the recorder's own event log on first plug, after the footage's
    # recording history: (kind (LogKind), detail, seconds before the plug), oldest first.
    field_log: tuple[tuple[int, str, float], ...] = ()
    # firmware update: signing keys the recorder trusts (64 hex digits of a raw Ed25519 key,
    # or PEM text), the size of each A/B slot, how many chunks it receives between syncs of
    # its durable offset, how long a reboot keeps it off the bus, and the serial link's
    # speed in bytes per second each way (0: unthrottled; ~1 MB/s is a real CDC-ACM link)
    firmware_keys: tuple[str, ...] = (SIM_VENDOR_PUBLIC,)
    firmware_slot_bytes: int = 256 * MIB
    firmware_sync_chunks: int = 16
    boot_delay_s: float = 1.0
    link_bytes_per_s: int = 1_000_000

    def __post_init__(self) -> None:
        for name, value in (("usb_vid", self.usb_vid), ("usb_pid", self.usb_pid)):
            if not _HEX4.fullmatch(value):
                raise SpecError(f"{name} must be 4 hex digits, got {value!r}")
        for key in self.firmware_keys:
            parse_trusted_key(key)
        if self.firmware_slot_bytes < 1 or self.firmware_sync_chunks < 1:
            raise SpecError("firmware_slot_bytes and firmware_sync_chunks must be positive")
        if self.boot_delay_s < 0 or self.link_bytes_per_s < 0:
            raise SpecError("boot_delay_s and link_bytes_per_s must not be negative")
        raw = self.serial.encode("utf-8")
        if len(raw) != SERIAL_WIDTH or not self.serial.isascii() or not self.serial.isalnum():
            raise SpecError(f"recorder serial must be {SERIAL_WIDTH} ASCII letters/digits, "
                            f"got {self.serial!r}")
        if not 0 <= self.battery_percent <= 100:
            raise SpecError("battery_percent must be within 0..100")
        n = len(self.footage.file_sizes)
        for idx in self._fault_indexes():
            if not 0 <= idx < n:
                raise SpecError(f"fault names footage file {idx}, but there are {n} files")
        if sum(self.footage.file_sizes) > self.storage_total_bytes:
            raise SpecError("footage does not fit into storage_total_bytes")

    def _fault_indexes(self) -> list[int]:
        f = self.faults
        idx = [i for i, _ in f.eio_at] + list(f.growing) + [i for i, _, _ in f.listed_times]
        if f.unplug_at is not None:
            idx.append(f.unplug_at[0])
        return idx
