"""The object-store credentials file: `access_key = ...` and `secret_key = ...` lines.

Kept out of the config (which is world-readable) and refused when group or others may
read it, like an SSH private key: a leaked key could delete or read footage centrally.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from agent.upload.errors import CredentialsError


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)


def load_credentials(path: Path) -> Credentials:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise CredentialsError(f"store credentials {path}: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CredentialsError(f"store credentials {path} is not a regular file")
        if st.st_mode & 0o077:
            raise CredentialsError(
                f"store credentials {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
        if st.st_uid not in (os.geteuid(), 0):
            raise CredentialsError(f"store credentials {path} is owned by uid {st.st_uid}, "
                                   "not by the agent's user or root")
        raw = os.read(fd, 65536)
    finally:
        os.close(fd)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CredentialsError(f"store credentials {path} is not UTF-8") from exc
    values: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        if not eq or key.strip() not in ("access_key", "secret_key"):
            raise CredentialsError(f"store credentials {path} line {n}: expected "
                                   "access_key = ... or secret_key = ...")
        values[key.strip()] = value.strip().strip('"')
    if not values.get("access_key") or not values.get("secret_key"):
        raise CredentialsError(f"store credentials {path} needs access_key and secret_key")
    return Credentials(values["access_key"], values["secret_key"])
