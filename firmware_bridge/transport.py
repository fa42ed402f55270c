"""Serial port I/O shell: a pyserial port driven by the event loop without blocking it.

pyserial only opens and configures the port (in a worker thread); reads and writes go
through ``loop.add_reader``/``add_writer`` on the non-blocking fd. EOF, EIO or ENXIO on
read means the recorder is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import Callable

import serial

from firmware_bridge.errors import LinkClosed

READ_CHUNK = 65536


def _open_serial(path: str, baudrate: int) -> serial.Serial:
    try:
        port = serial.Serial(path, baudrate, timeout=0, write_timeout=0, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise LinkClosed(f"cannot open {path}: {exc}") from exc
    os.set_blocking(port.fileno(), False)
    return port


def _close_serial(port: serial.Serial) -> None:
    # Drop unsent output first: a tty close can otherwise wait for it to drain.
    with contextlib.suppress(Exception):
        port.reset_output_buffer()
    with contextlib.suppress(Exception):
        port.close()


class SerialLink:
    """Bytes in via ``on_data``; ``on_lost(reason)`` once when the port goes away."""

    def __init__(
        self,
        port: serial.Serial,
        on_data: Callable[[bytes], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self._port = port
        self._fd = port.fileno()
        self._on_data = on_data
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._out = bytearray()
        self._writing = False
        self._open = True
        self._loop.add_reader(self._fd, self._readable)

    @classmethod
    async def open(
        cls,
        path: str,
        baudrate: int,
        on_data: Callable[[bytes], None],
        on_lost: Callable[[str], None],
    ) -> SerialLink:
        port = await asyncio.to_thread(_open_serial, path, baudrate)
        try:
            return cls(port, on_data, on_lost)
        except BaseException:
            await asyncio.to_thread(_close_serial, port)
            raise

    @property
    def is_open(self) -> bool:
        return self._open

    def write(self, data: bytes) -> None:
        """Queue bytes; written as the port accepts them (never blocks the loop)."""
        if not self._open:
            raise LinkClosed("serial port is closed")
        self._out += data
        if not self._writing:
            self._flush()

    async def aclose(self) -> None:
        if self._detach():
            await asyncio.to_thread(_close_serial, self._port)

    def _detach(self) -> bool:
        if not self._open:
            return False
        self._open = False
        self._loop.remove_reader(self._fd)
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        self._out.clear()
        return True

    def _lost(self, reason: str) -> None:
        if self._detach():
            # The device is gone; closing the fd cannot block on a dead tty's output.
            _close_serial(self._port)
            self._on_lost(reason)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(f"read failed: {errno.errorcode.get(exc.errno or 0, exc.errno)}")
            return
        if not data:
            self._lost("end of file (recorder unplugged)")
            return
        self._on_data(data)

    def _flush(self) -> None:
        while self._out:
            try:
                n = os.write(self._fd, self._out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._lost(f"write failed: {errno.errorcode.get(exc.errno or 0, exc.errno)}")
                return
            del self._out[:n]
        want = bool(self._out)
        if want and not self._writing:
            self._loop.add_writer(self._fd, self._flush)
        elif not want and self._writing:
            self._loop.remove_writer(self._fd)
        self._writing = want
