"""dock-mount: the privileged helper that mounts recorder storage for the agent.

The agent runs unprivileged; this root service does exactly two things on its behalf,
over a Unix socket (newline-JSON, see `protocol`):

- mount {devnode, name}: mount a recorder's block device read-only, nosuid, nodev,
  noexec, noatime at <mount-root>/<name>, after checking that the caller is the agent
  (SO_PEERCRED), the name is one safe path component, the devnode is a block device under
  /dev that the device policy accepts (by default: tagged a recorder by our udev rule) and
  holds an allowed filesystem, and the device is not mounted anywhere already. The block
  device itself is switched read-only first (BLKROSET), so no filesystem code path can
  write to evidence media; ext4 is mounted `noload` so its journal is not replayed.
- unmount {name, lazy}: unmount it (lazily when the recorder was pulled) and remove the
  mount point.

    python -m agent.mount.helper --socket /run/dock-agent-mount/mount.sock \\
        --mount-root /run/dock-agent-mount/media --owner dock-agent

With systemd socket activation (LISTEN_FDS) it serves the inherited socket on fd 3.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import grp
import logging
import os
import pwd
import socket
import stat
import struct
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.mount import syscalls
from agent.mount.errors import MountError, MountRefused, ProtocolError
from agent.mount.mountinfo import mounted_at, mounts_of_device, read_mountinfo
from agent.mount.naming import is_safe_name
from agent.mount.policy import DevicePolicy, UdevTagPolicy
from agent.mount.protocol import (
    MAX_LINE,
    MountRequest,
    Reply,
    Request,
    decode_request,
    encode_reply,
)

log = logging.getLogger("dock-mount")

REQUIRED_OPTIONS = frozenset({"ro", "nosuid", "nodev", "noexec"})
_FAT_MASKS = "fmask=0337,dmask=0227"  # files r--r-----, directories r-xr-x---
_SD_LISTEN_FDS_START = 3


def mount_data(fs_type: str, uid: int, gid: int) -> str:
    """Filesystem-specific mount options (the generic ones are mount flags)."""
    if fs_type == "vfat":
        return f"uid={uid},gid={gid},{_FAT_MASKS},utf8"
    if fs_type == "exfat":
        return f"uid={uid},gid={gid},{_FAT_MASKS},iocharset=utf8"
    if fs_type == "ext4":
        return "noload"  # a read-only mount must not replay the journal onto the device
    raise MountRefused("filesystem_not_allowed", f"no mount options for {fs_type}")


@dataclass
class HelperConfig:
    mount_root: Path
    owner_uid: int
    owner_gid: int
    policy: DevicePolicy = field(default_factory=UdevTagPolicy)

    @property
    def allowed_uids(self) -> frozenset[int]:
        return frozenset({0, self.owner_uid})


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_SYMLINKS = 40


def _own_dir(fd: int, gid: int) -> None:
    """root:<agent group> 0750 on a directory, by descriptor (never through a path). The
    service runs with the agent's group, so chown (CAP_CHOWN) is only needed outside it."""
    if os.fstat(fd).st_gid != gid:
        os.fchown(fd, 0, gid)
    os.fchmod(fd, 0o750)  # whatever the umask: the agent's group must enter


def _trusted(dir_fd: int) -> bool:
    """A directory only root can change: a symlink in it is root's word."""
    st = os.fstat(dir_fd)
    return st.st_uid == 0 and not st.st_mode & 0o022


def open_trusted_dir(path: Path) -> int:
    """An O_PATH descriptor of the directory `path`, walked one component at a time.

    A symlink is followed only where it sits in a directory only root can change; one in a
    directory another user controls (the agent's runtime directory) is refused, so no swap
    there can send the helper elsewhere.
    """
    if not path.is_absolute():
        raise MountRefused("bad_mount_root", f"{path} is not an absolute path")
    pending = list(reversed(path.parts[1:]))
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    hops = 0
    try:
        while pending:
            part = pending.pop()
            try:
                nxt = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise
                hops += 1
                if hops > _MAX_SYMLINKS or not _trusted(fd):
                    raise MountRefused(
                        "bad_mount_root",
                        f"{path}: {part} is a symlink in a directory others may change",
                    ) from exc
                target = Path(os.readlink(part, dir_fd=fd))
                pending.extend(reversed(target.parts[1:] if target.is_absolute()
                                        else target.parts))
                if target.is_absolute():
                    os.close(fd)
                    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                continue
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _real_path(root_fd: int, name: str) -> str:
    """<mount root>/<name> as the kernel names it in mountinfo (symlinks resolved)."""
    return str(Path(f"/proc/self/fd/{root_fd}").readlink() / name)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def check_peer(sock: socket.socket, allowed_uids: frozenset[int]) -> int:
    """The peer's uid if it may use the helper; MountRefused otherwise."""
    _, uid, _ = peer_credentials(sock)
    if uid not in allowed_uids:
        raise MountRefused("peer_not_allowed", f"uid {uid} may not use the mount helper")
    return uid


class MountService:
    """The two operations, with every check.

    Requests run concurrently (a mount of a failing card can hang in the kernel for a long
    time, and must not hold up the lazy unmount of a recorder that was pulled); a name or
    a device is only ever in one operation at a time.
    """

    def __init__(self, config: HelperConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._busy: set[object] = set()  # names and device numbers in an operation

    @contextlib.contextmanager
    def _reserve(self, *items: object) -> Iterator[None]:
        with self._lock:
            if any(item in self._busy for item in items):
                raise MountRefused("in_progress", "another request for this recorder is running")
            self._busy.update(items)
        try:
            yield
        finally:
            with self._lock:
                self._busy.difference_update(items)

    def handle(self, request: Request) -> Reply:
        try:
            if isinstance(request, MountRequest):
                path = self.mount(request.devnode, request.name)
            else:
                path = self.unmount(request.name, lazy=request.lazy)
        except MountRefused as exc:
            return Reply(False, code=exc.code, error=str(exc))
        except OSError as exc:
            return Reply(False, code=errno.errorcode.get(exc.errno or 0, "os_error").lower(),
                         error=str(exc))
        return Reply(True, path=path)

    # -- the mount root ------------------------------------------------------------------

    def _open_root(self) -> int:
        """A descriptor of the mount root, created if missing, verified root-owned and not
        writable by others.

        The root may live in a directory the agent controls, and the agent may swap any
        name there for a symlink at any moment: so every step works on descriptors. The
        parent is reached without following a symlink that someone other than root could
        have planted, the root is opened O_NOFOLLOW, and its owner and mode are set with
        fchown/fchmod on that descriptor after checking it is a root-owned directory."""
        root = self.config.mount_root
        parent_fd = open_trusted_dir(root.parent)
        try:
            created = False
            with contextlib.suppress(FileExistsError):
                os.mkdir(root.name, 0o750, dir_fd=parent_fd)
                created = True
            try:
                fd = os.open(root.name, _DIR_FLAGS, dir_fd=parent_fd)
            except OSError as exc:
                raise MountRefused(
                    "bad_mount_root", f"{root} is not a directory of ours: {exc.strerror}"
                ) from exc
        finally:
            os.close(parent_fd)
        try:
            self._check_root(fd, created=created)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _check_root(self, fd: int, *, created: bool) -> None:
        st = os.fstat(fd)
        bad = MountRefused("bad_mount_root", f"{self.config.mount_root} must be owned by "
                           "root and writable only by root")
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
            raise bad  # e.g. the agent's own directory swapped in after our mkdir
        if created:  # a root-owned directory: ours, whatever was swapped in its place
            _own_dir(fd, self.config.owner_gid)
        elif stat.S_IMODE(st.st_mode) & 0o022:
            raise bad

    def _mount_point(self, root_fd: int, name: str, *, create: bool) -> bool:
        """Make sure <root>/<name> is a root-owned directory; False if it does not exist."""
        try:
            st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
        except FileNotFoundError:
            if not create:
                return False
            os.mkdir(name, 0o750, dir_fd=root_fd)
            fd = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
            try:
                st = os.fstat(fd)
                if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
                    raise MountRefused("bad_mount_point", f"{name} in the mount root is not ours")
                _own_dir(fd, self.config.owner_gid)
            finally:
                os.close(fd)
            return True
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
            raise MountRefused("bad_mount_point", f"{name} in the mount root is not ours")
        return True

    # -- operations ----------------------------------------------------------------------

    def _check_devnode(self, devnode: str) -> tuple[str, int]:
        if not devnode.startswith("/dev/") or "\0" in devnode:
            raise MountRefused("bad_devnode", f"{devnode!r} is not a device under /dev")
        real = os.path.realpath(devnode)
        if not real.startswith("/dev/"):
            raise MountRefused("bad_devnode", f"{devnode!r} resolves outside /dev")
        try:
            st = Path(real).stat()
        except OSError as exc:
            raise MountRefused("bad_devnode", f"{devnode}: {exc.strerror}") from exc
        if not stat.S_ISBLK(st.st_mode):
            raise MountRefused("not_block_device", f"{devnode} is not a block device")
        return real, st.st_rdev

    def mount(self, devnode: str, name: str) -> str:
        if not is_safe_name(name):
            raise MountRefused("bad_name", f"{name!r} is not a safe mount point name")
        real, rdev = self._check_devnode(devnode)
        fs_type = self.config.policy.filesystem_of(real)
        data = mount_data(fs_type, self.config.owner_uid, self.config.owner_gid)
        with self._reserve(("name", name), ("device", rdev)):
            root_fd = self._open_root()
            try:
                return self._mount(real, rdev, fs_type, data, root_fd, name)
            finally:
                os.close(root_fd)

    def _mount(self, real: str, rdev: int, fs_type: str, data: str, root_fd: int,
               name: str) -> str:
        path = _real_path(root_fd, name)
        entries = read_mountinfo()
        existing = mounted_at(entries, path)
        elsewhere = [e for e in mounts_of_device(entries, rdev) if e.mount_point != path]
        if existing is not None:
            same = existing.device == (os.major(rdev), os.minor(rdev))
            if same and not elsewhere and existing.options >= REQUIRED_OPTIONS:
                return path  # ours already (the agent restarted): same device, same flags
            raise MountRefused("already_mounted", f"{path} is already a mount point")
        if elsewhere:
            raise MountRefused(
                "device_busy", f"{real} is already mounted at {elsewhere[0].mount_point}"
            )
        self._mount_point(root_fd, name, create=True)
        target = f"/proc/self/fd/{root_fd}/{name}"
        try:
            syscalls.set_block_read_only(real)
            syscalls.mount(real, target, fs_type, syscalls.READ_ONLY_FLAGS, data)
        except OSError as exc:
            os.rmdir(name, dir_fd=root_fd)
            raise MountRefused(
                "mount_failed", f"mounting {real} ({fs_type}) failed: {exc.strerror}"
            ) from exc
        mounted = mounted_at(read_mountinfo(), path)
        if mounted is None or not mounted.options >= REQUIRED_OPTIONS:
            syscalls.umount(target, lazy=True)
            os.rmdir(name, dir_fd=root_fd)
            raise MountRefused("mount_failed", f"{path} did not come up read-only")
        log.info("mounted %s (%s) at %s", real, fs_type, path)
        return path

    def unmount(self, name: str, *, lazy: bool) -> str:
        if not is_safe_name(name):
            raise MountRefused("bad_name", f"{name!r} is not a safe mount point name")
        with self._reserve(("name", name)):
            root_fd = self._open_root()
            try:
                return self._unmount(root_fd, name, lazy=lazy)
            finally:
                os.close(root_fd)

    def _unmount(self, root_fd: int, name: str, *, lazy: bool) -> str:
        path = _real_path(root_fd, name)
        mounted = mounted_at(read_mountinfo(), path) is not None
        # While mounted, the point shows the mounted filesystem's root, which FAT's `uid=`
        # gives to the agent: the ownership check applies to the bare directory only. Only
        # this helper can mount under the root-owned mount root, so the mount is ours.
        if not mounted and not self._mount_point(root_fd, name, create=False):
            return path  # nothing there: already unmounted
        target = f"/proc/self/fd/{root_fd}/{name}"
        if mounted:
            try:
                syscalls.umount(target, lazy=lazy)
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    raise MountRefused(
                        "busy", f"{path} is in use; unmount lazily or close its files"
                    ) from exc
                raise
        os.rmdir(name, dir_fd=root_fd)
        log.info("unmounted %s%s", path, " (lazy)" if lazy else "")
        return path


class HelperServer:
    """Accepts connections and serves each on its own thread, requests one per line.

    At most `max_connections` are served at once: further clients wait in the listen
    backlog until one finishes (the agent opens one connection per request and times out
    on its side). A connection idle for `idle_timeout_s` is closed, so a client that
    connects and says nothing cannot hold a slot for ever.
    """

    def __init__(self, service: MountService, listener: socket.socket, *,
                 max_connections: int = 8, idle_timeout_s: float = 60.0) -> None:
        self.service = service
        self.listener = listener
        self.idle_timeout_s = idle_timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)
        self._closing = threading.Event()

    def serve_forever(self) -> None:
        while not self._closing.is_set():
            if not self._slots.acquire(timeout=0.5):
                continue  # every slot busy: leave the next client in the backlog
            try:
                conn, _ = self.listener.accept()
            except OSError:
                self._slots.release()
                if self._closing.is_set():
                    return
                raise
            try:
                threading.Thread(target=self._serve_slot, args=(conn,), daemon=True,
                                 name="dock-mount-conn").start()
            except BaseException:
                conn.close()
                self._slots.release()
                raise

    def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()

    def _serve_slot(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(self.idle_timeout_s)
            self._serve(conn)
        finally:
            self._slots.release()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                check_peer(conn, self.service.config.allowed_uids)
            except MountRefused as exc:
                log.warning("refused connection: %s", exc)
                _refuse(conn, Reply(False, code=exc.code, error=str(exc)))
                return
            reader = conn.makefile("rb")
            while True:
                try:
                    line = reader.readline(MAX_LINE + 1)
                except OSError:
                    return
                if not line:
                    return
                try:
                    reply = self.service.handle(_decode_line(line))
                except ProtocolError as exc:
                    _refuse(conn, Reply(False, code="bad_request", error=str(exc)))
                    return  # the stream may be out of step: drop the connection
                try:
                    conn.sendall(encode_reply(reply))
                except OSError:
                    return


def _refuse(conn: socket.socket, reply: Reply) -> None:
    """Send a last reply and hang up so that the client reads it: closing with unread
    input would reset the connection and lose the reply."""
    with contextlib.suppress(OSError):
        conn.sendall(encode_reply(reply))
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(2.0)
        budget = 1 << 20  # never let a refused peer keep this thread busy for long
        while budget > 0 and (chunk := conn.recv(65536)):
            budget -= len(chunk)


def _decode_line(line: bytes) -> Request:
    if not line.endswith(b"\n"):
        raise ProtocolError(f"request longer than {MAX_LINE} bytes")
    return decode_request(line)


def listening_socket(path: Path, owner_gid: int) -> socket.socket:
    """The systemd-provided socket (LISTEN_FDS), or a fresh one bound at `path`."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and int(
        os.environ.get("LISTEN_FDS", "0")
    ) >= 1:
        return socket.socket(fileno=_SD_LISTEN_FDS_START)
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    os.chown(path.parent, 0, owner_gid)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o117)  # born 0660, never briefly open to everyone
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chown(path, 0, owner_gid)
    sock.listen(16)
    return sock


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dock-mount", description=__doc__.split("\n")[0])
    parser.add_argument("--socket", type=Path, default=Path("/run/dock-agent-mount/mount.sock"))
    parser.add_argument("--mount-root", type=Path,
                        default=Path("/run/dock-agent-mount/media"))
    parser.add_argument("--owner", default="dock-agent", help="user the agent runs as")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if os.geteuid() != 0:
        print("dock-mount must run as root", file=sys.stderr)
        return 2
    try:
        user = pwd.getpwnam(args.owner)
    except KeyError:
        print(f"dock-mount: no such user {args.owner!r}", file=sys.stderr)
        return 2
    log.info("agent user %s (uid %d, group %s)", args.owner, user.pw_uid,
             grp.getgrgid(user.pw_gid).gr_name)
    config = HelperConfig(args.mount_root, user.pw_uid, user.pw_gid)
    service = MountService(config)
    try:
        if args.mount_root.parent.is_dir():  # else the agent's runtime dir comes later
            os.close(service._open_root())  # a bad mount root fails now, not at a docking
        listener = listening_socket(args.socket, user.pw_gid)
    except (OSError, MountError) as exc:
        print(f"dock-mount: {exc}", file=sys.stderr)
        return 1
    server = HelperServer(service, listener)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
