"""Helpers of the upload tests: stored files, store clients, a fault-injecting proxy."""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from blake3 import blake3

from agent.settings import RetentionSettings, UploadSettings
from agent.store.db import Database
from agent.store.evidence import (
    StoredFile,
    StoredFileRecord,
    commit_file,
    get_file,
    layout_relpath,
)
from agent.store.ledger import Ledger
from hw_sim import rgw

DOCK = "dock-up-01"
UPLOAD = UploadSettings(enabled=True, part_mib=5, backoff_min_s=0.1, backoff_max_s=0.5,
                        poll_s=0.2, object_lock="auto")
RETENTION = RetentionSettings(purge=True, min_days_on_dock=7, purge_after_days=30,
                              check_interval_s=0.2)
DAY_US = 86_400_000_000
NOW_US = 1_800_000_000_000_000


def store_file(db: Database, ledger: Ledger, store: Path, content: bytes, *,
               serial: str = "SER00001", officer: str = "007", name: bytes = b"F0001.MP4",
               rec_start_us: int | None = None, offload_end_us: int | None = None) -> int:
    """Write a file into the store the way the offloader does, then commit it."""
    start = rec_start_us if rec_start_us is not None else NOW_US - 40 * DAY_US
    end = offload_end_us if offload_end_us is not None else start + 3_600_000_000
    day = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=start)).date()
    rel = layout_relpath("U01", serial, officer, day, name)
    path = store / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.chmod(path, 0o440)
    rec = StoredFileRecord(
        recorder_serial=serial, session_id="sess-1", bay="bay-1", source_name=name,
        stored_relpath=rel, size=len(content), blake3_hex=blake3(content).hexdigest(),
        rec_start_us=start, rec_end_us=start + 60_000_000, offload_start_us=end - 100,
        offload_end_us=end, unit_no="U01", officer_no=officer, officer_name="Li Wéi",
        late=False, late_by_s=0.0, deadline_us=None,
    )
    entry = db.write_sync(lambda c: commit_file(c, ledger, rec))
    return int(entry.data["file_id"])


def wait_for(pred: Callable[[], object], what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class FaultProxy:
    """A TCP proxy in front of the real gateway that can be down, hang, or answer 503."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.mode = "pass"  # pass | down | hang | error
        self.requests = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._stop = False
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                c, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        self.requests += 1
        mode = self.mode
        try:
            if mode == "down":
                c.close()  # connection reset right away
                return
            if mode == "hang":
                while not self._stop and self.mode == "hang":
                    time.sleep(0.05)
                c.close()
                return
            if mode == "error":
                c.recv(65536)
                c.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                          b"Connection: close\r\n\r\n")
                c.close()
                return
            up = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pipe, args=(up, c), daemon=True).start()
            self._pipe(c, up)
        except OSError:
            c.close()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        self._sock.close()
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass


def write_config(tmp_path: Path, endpoint: str, bucket: str, access: str, secret: str,
                 region: str, **upload: object) -> Path:
    """An agent config whose state, key and store are the test fixtures' own."""
    return rgw.agent_config(tmp_path, dock_id=DOCK, endpoint=endpoint, bucket=bucket,
                            region=region, access_key=access, secret_key=secret,
                            key_file=tmp_path / "keys" / "dock.key", upload=upload)


def stored(db: Database, file_id: int) -> StoredFile:
    """The evidence row of `file_id`, which the test knows exists."""
    found = db.read_sync(lambda c: get_file(c, file_id))
    assert found is not None, f"no evidence row {file_id}"
    return found
