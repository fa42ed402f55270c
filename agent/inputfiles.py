"""Reading the files an operator hands the agent: the config, secrets, keys.

Every such file is opened without blocking (a FIFO given by mistake must not hang the
agent), checked to be a regular file (a device such as /dev/zero would never end), read up
to a size cap, and for secrets checked for who else may read it. Standard library only:
`dock-agent --check-config` runs before any virtual environment exists.

The permission rule for secrets (fleet secret, MQTT password, private keys):
- no access at all for others, and no write access for the group;
- group read only for the agent's own group: the installer's layout is `root:dock-agent`
  mode 0640, read by the agent through its group. The agent's group is the group of the
  process, or the group named `dock-agent` when the check runs as root (an operator
  checking the configuration before starting the service).
"""

from __future__ import annotations

import contextlib
import grp
import os
import stat
from pathlib import Path

AGENT_GROUP = "dock-agent"
MAX_CONFIG_BYTES = 1 << 20
MAX_SECRET_BYTES = 64 << 10


class InputFileError(Exception):
    """An input file is missing, not a regular file, too large or too widely readable.

    `reason` says what is wrong without naming the file (the caller may name it)."""

    def __init__(self, what: str, path: Path, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{what} {path}: {reason}")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def agent_gids() -> frozenset[int]:
    """Groups through which the agent may legitimately read its secrets."""
    if os.geteuid() != 0:
        return frozenset({os.getegid(), *os.getgroups()})
    gids = {0}
    with contextlib.suppress(KeyError):
        gids.add(grp.getgrnam(AGENT_GROUP).gr_gid)
    return frozenset(gids)


def secret_mode_problem(st: os.stat_result, *, group_ok: bool = True) -> str | None:
    """Why a secret with this status is too widely accessible, or None. Without
    `group_ok` (a key the agent made itself) only the owner may have any access."""
    mode = stat.S_IMODE(st.st_mode)
    if not group_ok:
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            return f"has mode {mode:04o}; it must be 0600"
        return None
    fix = f"make it mode 0600 (or 0640 root:{AGENT_GROUP})"
    if mode & stat.S_IRWXO:
        return f"accessible by others (mode {mode:04o}); {fix}"
    if mode & stat.S_IWGRP:
        return f"writable by its group (mode {mode:04o}); {fix}"
    if mode & stat.S_IRGRP and st.st_gid not in agent_gids():
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        return f"readable by group {group} (mode {mode:04o}); {fix}"
    return None


def read_input_file(path: Path, what: str, *, max_bytes: int, secret: bool = False,
                    group_ok: bool = True) -> bytes:
    """The whole content of a regular file; InputFileError with a one-line reason."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise InputFileError(what, path, exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputFileError(what, path, f"is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > max_bytes:
            raise InputFileError(what, path, f"is larger than {max_bytes} bytes")
        if secret and (problem := secret_mode_problem(st, group_ok=group_ok)):
            raise InputFileError(what, path, problem)
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, 65536):
            total += len(chunk)
            if total > max_bytes:  # grew since fstat
                raise InputFileError(what, path, f"is larger than {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise InputFileError(what, path, exc.strerror or str(exc)) from None
    finally:
        os.close(fd)


def prepare_private_dir(path: Path, mode: int, what: str) -> None:
    """Create `path` (and its parents) if missing and give it `mode`, never through a
    symlink: the final component must be a real directory, changed by descriptor."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        st = None
        with contextlib.suppress(OSError):
            st = os.lstat(path)
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise InputFileError(
                what, path, "is a symlink; give the real directory instead"
            ) from None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise InputFileError(what, path, f"is {_kind(st.st_mode)}, not a directory") \
                from None
        raise InputFileError(what, path, exc.strerror or str(exc)) from None
    try:
        os.fchmod(fd, mode)
    except OSError as exc:
        raise InputFileError(what, path, exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
