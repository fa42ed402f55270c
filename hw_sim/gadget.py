"""A virtual recorder on a real USB bus: a Linux configfs USB gadget driven by hw_sim firmware.

On a Linux machine with a USB device controller (UDC) — `dummy_hcd` in the HIL guest, or
`dwc2` on a Raspberry Pi in device mode — this module makes a composite USB device that
looks to the host like a docked recorder:

- a CDC-ACM serial function (host: /dev/ttyACM*; device end: /dev/ttyGS<n>) on which the
  hw_sim recorder firmware answers the recorder protocol, and
- a USB mass-storage function whose single removable LUN is backed by a disk image (for
  example a FAT32 image holding the footage). The LUN holds no medium until the host
  switches mass storage on over the protocol; switching it off, or unplugging, ejects it.

Writing the UDC name into the gadget's `UDC` file plugs it in; clearing it unplugs it.

    gadget = UsbGadget(GadgetSpec("rec1", vid=0x1D6B, pid=0x0104, serial="BWC00001"))
    gadget.create(); gadget.plug("dummy_udc.0"); ...; gadget.unplug(); gadget.destroy()

    rec = GadgetRecorder(spec, workdir, image, udc="dummy_udc.0")
    await rec.plug(); ...; await rec.unplug(); await rec.close()

Run `python -m hw_sim.gadget --help` for a stand-alone recorder (e.g. on a Pi). Needs root
and the configfs, libcomposite, usb_f_acm and usb_f_mass_storage kernel modules.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import termios
import tty
from dataclasses import dataclass
from pathlib import Path

from hw_sim.endpoint import DeviceEndpoint, DeviceServer
from hw_sim.errors import SimError
from hw_sim.firmware import RecorderFirmware, RecorderState
from hw_sim.recorder import DEFAULT_FLEET_SECRET, fleet_secret_from_file
from hw_sim.spec import FootageSpec, RecorderSpec
from hw_sim.storage import RecorderStorage

log = logging.getLogger(__name__)

CONFIGFS_GADGETS = Path("/sys/kernel/config/usb_gadget")
UDC_CLASS = Path("/sys/class/udc")
RECORDER_VID, RECORDER_PID = 0x1D6B, 0x0104  # Linux Foundation multifunction composite gadget
_ACM = "acm.usb0"
_MSC = "mass_storage.usb0"
_CONFIG = "c.1"
_STRINGS = "0x409"  # US English


class GadgetError(SimError):
    """A configfs gadget operation failed (module missing, UDC busy, bad state)."""


def available_udcs(udc_class: Path = UDC_CLASS) -> list[str]:
    """Names of the USB device controllers present, sorted (e.g. dummy_udc.0, dummy_udc.1)."""
    try:
        return sorted(p.name for p in udc_class.iterdir())
    except OSError:
        return []


@dataclass(frozen=True)
class GadgetSpec:
    """One USB gadget: descriptors and the functions it carries."""

    name: str  # configfs directory name
    vid: int
    pid: int
    serial: str
    manufacturer: str = "dock-agent hw_sim"
    product: str = "Virtual body-worn recorder"
    acm: bool = True  # serial control port
    mass_storage: bool = True
    removable: bool = True  # LUN medium can be inserted/ejected while plugged


class UsbGadget:
    """A configfs gadget (see module docstring). Methods block briefly on configfs writes."""

    def __init__(self, spec: GadgetSpec, *, configfs: Path = CONFIGFS_GADGETS) -> None:
        if not (spec.acm or spec.mass_storage):
            raise GadgetError(f"gadget {spec.name}: needs at least one function")
        self.spec = spec
        self.dir = configfs / spec.name
        self._configfs = configfs

    # --- configfs plumbing ----------------------------------------------------------------
    def _write(self, rel: str, value: str) -> None:
        path = self.dir / rel
        try:
            path.write_text(value + "\n" if value else "\n")
        except OSError as exc:
            raise GadgetError(f"gadget {self.spec.name}: cannot write {value!r} to {rel}: "
                              f"{exc.strerror or exc}") from exc

    def _read(self, rel: str) -> str:
        try:
            return (self.dir / rel).read_text().strip()
        except OSError as exc:
            raise GadgetError(f"gadget {self.spec.name}: cannot read {rel}: {exc}") from exc

    @property
    def exists(self) -> bool:
        return self.dir.is_dir()

    def create(self) -> None:
        """Build the gadget's configfs tree (not plugged yet)."""
        if not self._configfs.is_dir():
            raise GadgetError(f"{self._configfs} missing: load libcomposite, mount configfs")
        s = self.spec
        try:
            self.dir.mkdir()
            (self.dir / "strings" / _STRINGS).mkdir()
            config = self.dir / "configs" / _CONFIG
            config.mkdir()
            (config / "strings" / _STRINGS).mkdir()
        except OSError as exc:
            raise GadgetError(f"gadget {s.name}: cannot create: {exc}") from exc
        self._write("idVendor", f"0x{s.vid:04x}")
        self._write("idProduct", f"0x{s.pid:04x}")
        self._write("bcdDevice", "0x0100")
        self._write("bcdUSB", "0x0200")
        if s.acm and s.mass_storage:  # composite with an interface association (IAD)
            self._write("bDeviceClass", "0xEF")
            self._write("bDeviceSubClass", "0x02")
            self._write("bDeviceProtocol", "0x01")
        self._write(f"strings/{_STRINGS}/serialnumber", s.serial)
        self._write(f"strings/{_STRINGS}/manufacturer", s.manufacturer)
        self._write(f"strings/{_STRINGS}/product", s.product)
        self._write(f"configs/{_CONFIG}/strings/{_STRINGS}/configuration", "recorder")
        self._write(f"configs/{_CONFIG}/MaxPower", "250")
        for func, wanted in ((_ACM, s.acm), (_MSC, s.mass_storage)):
            if not wanted:
                continue
            try:
                (self.dir / "functions" / func).mkdir()
            except OSError as exc:
                raise GadgetError(f"gadget {s.name}: cannot create function {func} "
                                  f"(kernel module usb_f_{func.split('.')[0]}?): {exc}") from exc
            if func == _MSC:
                self._write(f"functions/{_MSC}/lun.0/removable", "1" if s.removable else "0")
                self._write(f"functions/{_MSC}/stall", "1")
            (self.dir / "configs" / _CONFIG / func).symlink_to(self.dir / "functions" / func)

    @property
    def tty_path(self) -> str:
        """The device end of the ACM function (/dev/ttyGS<n>)."""
        if not self.spec.acm:
            raise GadgetError(f"gadget {self.spec.name} has no serial function")
        return f"/dev/ttyGS{int(self._read(f'functions/{_ACM}/port_num'))}"

    @property
    def udc(self) -> str:
        """The UDC it is bound to ("" when unplugged)."""
        return self._read("UDC") if self.exists else ""

    def plug(self, udc: str) -> None:
        self._write("UDC", udc)

    def unplug(self) -> None:
        if self.udc:
            self._write("UDC", "")

    def insert_medium(self, image: Path) -> None:
        """Back the LUN with `image` (the host sees a medium appear)."""
        self._write(f"functions/{_MSC}/lun.0/file", str(image))

    def eject_medium(self) -> None:
        """Remove the LUN's medium, even if the host asked to lock it in."""
        if not self.spec.mass_storage:
            return
        if self._read(f"functions/{_MSC}/lun.0/file"):
            self._write(f"functions/{_MSC}/lun.0/forced_eject", "1")

    @property
    def medium(self) -> str:
        return self._read(f"functions/{_MSC}/lun.0/file") if self.spec.mass_storage else ""

    def destroy(self) -> None:
        """Unplug and remove the configfs tree (in the reverse order of creation)."""
        if not self.exists:
            return
        self.unplug()
        config = self.dir / "configs" / _CONFIG
        for func in (_ACM, _MSC):
            with contextlib.suppress(FileNotFoundError):
                (config / func).unlink()
        for d in (config / "strings" / _STRINGS, config, self.dir / "functions" / _ACM,
                  self.dir / "functions" / _MSC, self.dir / "strings" / _STRINGS, self.dir):
            try:
                d.rmdir()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise GadgetError(f"gadget {self.spec.name}: cannot remove {d}: {exc}") from exc


def _open_raw_tty(path: str) -> int:
    """Open the gadget's serial end raw (no echo, no line discipline), non-blocking."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        tty.setraw(fd)
        termios.tcflush(fd, termios.TCIOFLUSH)  # nothing stale from an earlier plug
    except termios.error:
        os.close(fd)
        raise
    return fd


class GadgetRecorder:
    """A hw_sim recorder served over a USB gadget instead of a pty.

    The firmware (identity, officer, clock, battery, listing, guarded delete) is the same
    as `VirtualRecorder`'s and keeps its files under `<workdir>/<serial>/`; the footage the
    host reads is `image`, which the caller built from those files. The LUN gets the image
    only while mass storage is on, as on a real recorder.
    """

    def __init__(
        self,
        spec: RecorderSpec,
        workdir: Path,
        image: Path,
        *,
        udc: str,
        vid: int = RECORDER_VID,
        pid: int = RECORDER_PID,
        secret: bytes = DEFAULT_FLEET_SECRET,
        gadget_name: str | None = None,
    ) -> None:
        self.spec = spec
        self.image = image
        self.udc = udc
        self.storage = RecorderStorage(spec, workdir / spec.serial)
        self.firmware = RecorderFirmware(spec, self.storage, self._mass_storage_changed)
        self.gadget = UsbGadget(
            GadgetSpec(gadget_name or f"rec_{spec.serial.lower()}", vid=vid, pid=pid,
                       serial=spec.serial, product=f"Recorder {spec.model}")
        )
        self._secret = secret
        self._fd: int | None = None
        self._server: DeviceServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._medium_lock = asyncio.Lock()
        self._medium_tasks: set[asyncio.Task[None]] = set()
        self._reboot_task: asyncio.Task[None] | None = None
        self.plugs = 0

    @property
    def state(self) -> RecorderState:
        return self.firmware.state

    @property
    def plugged(self) -> bool:
        return self._fd is not None

    async def plug(self) -> None:
        """Power on and attach to the bus; the firmware serves the gadget's tty."""
        if self._fd is not None:
            raise GadgetError(f"recorder {self.spec.serial} is already plugged")
        if not self.gadget.exists:
            await asyncio.to_thread(self.gadget.create)
        await asyncio.to_thread(self.storage.materialise)
        await asyncio.to_thread(self.firmware.load)
        self.firmware.state.mass_storage = False
        self.firmware.reboot_requested = False
        self._fd = await asyncio.to_thread(_open_raw_tty, self.gadget.tty_path)
        self._server = DeviceServer(self._fd, DeviceEndpoint(self.firmware, self._secret),
                                    after_replies=self._after_replies)
        self._task = asyncio.create_task(self._server.run(), name=f"gadget-{self.spec.serial}")
        await asyncio.to_thread(self.gadget.plug, self.udc)
        self.plugs += 1
        log.info("recorder %s plugged on %s (%s)", self.spec.serial, self.udc,
                 self.gadget.tty_path)

    async def unplug(self) -> None:
        """Pull it off the bus: the host loses tty and disk at once. Safe to call twice."""
        if self._fd is None:
            return
        await asyncio.to_thread(self.gadget.unplug)
        async with self._medium_lock:
            await asyncio.to_thread(self.gadget.eject_medium)
        if self._server is not None:
            await self._server.aclose()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = self._server = self._task = None
        self.firmware.state.mass_storage = False
        log.info("recorder %s unplugged", self.spec.serial)

    def _after_replies(self) -> None:
        """A Reboot's Ok is written: leave the bus, come back after the boot delay."""
        if self.firmware.reboot_requested and self._reboot_task is None:
            self.firmware.reboot_requested = False
            self._reboot_task = asyncio.get_running_loop().create_task(self._reboot())

    async def _reboot(self) -> None:
        try:
            if self._fd is not None:  # let the Ok reach the host before the bus drops
                with contextlib.suppress(OSError, termios.error):
                    await asyncio.to_thread(termios.tcdrain, self._fd)
            await self.unplug()
            await asyncio.sleep(self.spec.boot_delay_s)
            await self.plug()
        finally:
            self._reboot_task = None

    async def close(self) -> None:
        if self._reboot_task is not None:
            self._reboot_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reboot_task
        await self.unplug()
        for t in list(self._medium_tasks):
            with contextlib.suppress(asyncio.CancelledError, GadgetError):
                await t
        await asyncio.to_thread(self.gadget.destroy)

    def _mass_storage_changed(self, on: bool) -> None:
        """Called by the firmware inside SetMassStorage: (un)load the LUN after the reply."""
        self.firmware.invalidate_listing()
        task = asyncio.get_running_loop().create_task(self._switch_medium(on))
        self._medium_tasks.add(task)
        task.add_done_callback(self._medium_tasks.discard)

    async def _switch_medium(self, on: bool) -> None:
        async with self._medium_lock:
            if self._fd is None:
                return
            try:
                if on:
                    await asyncio.to_thread(self.gadget.insert_medium, self.image)
                else:
                    await asyncio.to_thread(self.gadget.eject_medium)
            except GadgetError:
                log.exception("recorder %s: cannot switch mass storage", self.spec.serial)


# --- stand-alone recorder ---------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hw_sim.gadget",
        description="Serve one virtual recorder on a USB device controller until SIGTERM.",
    )
    p.add_argument("--serial", required=True, help="recorder serial (8 letters/digits)")
    p.add_argument("--image", type=Path, required=True, help="disk image for the LUN")
    p.add_argument("--workdir", type=Path, required=True, help="firmware state directory")
    p.add_argument("--udc", help="UDC name (default: the first in /sys/class/udc)")
    p.add_argument("--secret-file", type=Path, help="fleet secret (default: built-in)")
    p.add_argument("--footage-count", type=int, default=3)
    p.add_argument("--footage-mib", type=int, default=4)
    p.add_argument("--footage-seed", type=int, default=1)
    p.add_argument("--footage-start-ms", type=int, default=1_795_000_000_000)
    return p


async def _serve(args: argparse.Namespace) -> int:
    udc = args.udc or next(iter(available_udcs()), None)
    if udc is None:
        raise GadgetError("no USB device controller (load dummy_hcd, or dwc2 on a Pi)")
    spec = RecorderSpec(serial=args.serial, footage=FootageSpec(
        count=args.footage_count, size_bytes=args.footage_mib << 20, seed=args.footage_seed,
        start_ms=args.footage_start_ms))
    secret = fleet_secret_from_file(args.secret_file) if args.secret_file else DEFAULT_FLEET_SECRET
    rec = GadgetRecorder(spec, args.workdir, args.image, udc=udc, secret=secret)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await rec.plug()
    print(f"recorder {spec.serial} plugged on {udc}", flush=True)
    try:
        await stop.wait()
    finally:
        await rec.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_serve(args))
    except SimError as exc:
        print(f"hw_sim.gadget: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
