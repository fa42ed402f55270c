"""A throwaway single-node Ceph RADOS Gateway: a real S3 server for tests and the demo.

One monitor, one BlueStore OSD on a sparse file and one radosgw, all plain processes
under one directory (no systemd, no /etc/ceph), from Debian's ceph-mon, ceph-osd,
radosgw and ceph-common packages. Boots in ~5 s and idles at ~130 MiB RSS.

Choices that matter (each was needed):
- `auth none` needs `ms mon client mode = crc` for radosgw, or it never opens its port;
- the OSD file is large and sparse: a full OSD makes S3 writes hang instead of failing;
- the RGW pools are created up front (lazily, each costs ~2 s on first use);
- every daemon runs in the foreground in its own session with stdio to log files, so
  its pid is known, it cannot hold our pipes, and a Ctrl-C on the caller misses it;
- `MALLOC_ARENA_MAX=2` keeps glibc malloc from holding ~700 MB after upload bursts;
- TLS on a second port with a throwaway CA (`ca_file`), for testing custom-CA setups.

    python -m hw_sim.rgw up DIR [PORT]    # prints S3_ENDPOINT=... lines, leaves it running
    python -m hw_sim.rgw down DIR
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "DOCKTESTACCESSKEY001"
SECRET_KEY = "docktestsecretkey00000000000000000000001"  # noqa: S105 - throwaway test store
POOLS = (".rgw.root", "default.rgw.log", "default.rgw.control", "default.rgw.meta",
         "default.rgw.buckets.index", "default.rgw.buckets.data",
         "default.rgw.buckets.non-ec")
BINARIES = ("monmaptool", "ceph-mon", "ceph-osd", "radosgw", "ceph", "radosgw-admin")


class RgwError(Exception):
    """The local gateway could not be started."""


@dataclass(frozen=True)
class Rgw:
    dir: Path
    endpoint: str
    access_key: str
    secret_key: str
    region: str = "default"
    tls_endpoint: str = ""  # https://localhost:PORT, certificate signed by `ca_file`
    ca_file: Path | None = None

    @property
    def conf(self) -> Path:
        return self.dir / "ceph.conf"

    def pid(self, name: str) -> int | None:
        for line in (self.dir / "pids").read_text().splitlines():
            n, _, p = line.partition(" ")
            if n == name:
                return int(p)
        return None


def available() -> bool:
    return all(shutil.which(b) for b in BINARIES)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ceph.conf of the single-node cluster; `$name` and `$id` are Ceph's own metavariables.
_CONF = """[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
public addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
ms async op threads = 1
auth cluster required = none
auth service required = none
auth client required = none
run dir = {d}/run
admin socket = {d}/run/$name.asok
pid file = {d}/run/$name.pid
log file = {d}/log/$name.log
mon cluster log file = {d}/log/cluster.log
crash dir = {d}/crash
keyring = /dev/null
log to stderr = false
err to stderr = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail warn = 2
mon data avail crit = 1
mgr initial modules =
paxos propose interval = 0.1

[mon]
mon data = {d}/mon.$id
mon memory target = 134217728
mon memory autotune = false
rocksdb cache size = 33554432

[osd]
osd data = {d}/osd.$id
osd objectstore = bluestore
bluestore block size = {osd_bytes}
bluestore block create = true
bluestore block db create = false
bluestore block wal create = false
bluestore fsck on mount = false
bluestore fsck on mkfs = false
bluestore cache autotune = false
bluestore cache size = 67108864
osd memory target = 939524096
osd memory target autotune = false
bluestore rocksdb options = compression=kNoCompression,max_write_buffer_number=2,\
min_write_buffer_number_to_merge=1,write_buffer_size=16777216,max_background_compactions=1,\
max_total_wal_size=67108864
osd op num shards = 1
osd op num threads per shard = 2
osd client message size cap = 67108864

[client]
ms mon client mode = crc
rgw data = {d}/rgw.$id
rgw frontends = beast endpoint=127.0.0.1:{port} ssl_endpoint=127.0.0.1:{tls_port} \
ssl_certificate={d}/tls/server.pem ssl_private_key={d}/tls/server.key
rgw thread pool size = 32
rgw put obj min window size = 4194304
rgw put obj max window size = 8388608
rgw get obj window size = 8388608
rgw enable usage log = false
rgw enable ops log = false
rgw dynamic resharding = false
rgw gc obj min wait = 60
rgw gc processor period = 60
"""


def _conf(d: Path, fsid: str, mon_port: int, port: int, tls_port: int, osd_bytes: int
          ) -> str:
    return _CONF.format(d=d, fsid=fsid, mon_port=mon_port, port=port, tls_port=tls_port,
                        osd_bytes=osd_bytes)


class _Boot:
    def __init__(self, d: Path) -> None:
        self.d = d
        self.c = ["-c", str(d / "ceph.conf")]
        self.env = {**os.environ, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}

    def run(self, *cmd: str, timeout: float = 60) -> str:
        with (self.d / "log" / "setup.log").open("ab") as logf:
            out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=logf, timeout=timeout,
                                 env=self.env, check=False)
        if out.returncode != 0:
            raise RgwError(f"{' '.join(cmd[:3])} failed ({out.returncode}); see {self.d}/log")
        return out.stdout.decode()

    def start(self, name: str, *cmd: str) -> None:
        with (self.d / "log" / f"{name}.stdout").open("ab") as logf:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf,
                                 stderr=logf, env=self.env, start_new_session=True)
        with (self.d / "pids").open("a") as f:
            f.write(f"{name} {p.pid}\n")
        self._procs = [*getattr(self, "_procs", []), (name, p)]

    def wait(self, what: str, check: object, deadline_s: float) -> None:
        end = time.monotonic() + deadline_s
        while True:
            if callable(check) and check():
                return
            for name, p in getattr(self, "_procs", []):
                if p.poll() is not None:
                    raise RgwError(f"{name} exited while waiting for {what}; see {self.d}/log")
            if time.monotonic() > end:
                raise RgwError(f"timed out waiting for {what}; see {self.d}/log")
            time.sleep(0.2)

    def ok(self, *cmd: str) -> bool:
        try:
            return subprocess.run(cmd, capture_output=True, timeout=15, env=self.env,
                                  check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):  # noqa: S310 - local http URL
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the gateway is up
    except OSError:
        return False


def _start_mon(b: _Boot, fsid: str, mon_port: int) -> None:
    d = b.d
    b.run("monmaptool", "--create", "--clobber", "--fsid", fsid, "--addv", "a",
          f"[v2:127.0.0.1:{mon_port}]", str(d / "monmap"))
    b.run("ceph-mon", *b.c, "--mkfs", "-i", "a", "--monmap", str(d / "monmap"))
    b.start("mon.a", "ceph-mon", *b.c, "-f", "-i", "a")
    b.wait("the monitor", lambda: b.ok("ceph", *b.c, "--connect-timeout", "5", "mon",
                                       "stat"), 60)


def _start_osd(b: _Boot) -> None:
    """The OSD, with the RGW pools created while it starts (each costs ~2 s lazily)."""
    d = b.d
    osd_uuid = str(uuid.uuid4())
    osd_id = b.run("ceph", *b.c, "osd", "new", osd_uuid).strip()
    if osd_id != "0":
        raise RgwError(f"unexpected OSD id {osd_id}")
    script = "".join(f"osd pool create {p} 8 8\nosd pool application enable {p} rgw\n"
                     for p in POOLS)
    with (d / "log" / "pools.log").open("ab") as logf:
        pools = subprocess.Popen(["ceph", *b.c], stdin=subprocess.PIPE, stdout=logf,
                                 stderr=logf, env=b.env)
        assert pools.stdin is not None
        pools.stdin.write(script.encode())
        pools.stdin.close()
    b.run("ceph-osd", *b.c, "-i", "0", "--mkfs", "--osd-uuid", osd_uuid, timeout=120)
    b.start("osd.0", "ceph-osd", *b.c, "-f", "-i", "0")

    def osd_up() -> bool:
        try:
            out = subprocess.run(["ceph", *b.c, "osd", "dump"], capture_output=True,
                                 timeout=15, env=b.env, check=False).stdout.decode()
        except subprocess.TimeoutExpired:
            return False
        return any(line.startswith("osd.0 up") for line in out.splitlines())

    b.wait("the OSD", osd_up, 90)
    if pools.wait(timeout=120) != 0:
        raise RgwError(f"creating the RGW pools failed; see {d}/log/pools.log")


def up(d: Path, port: int | None = None, *, osd_size_gib: int = 20,
       timeout_s: float = 180) -> Rgw:
    """Start a fresh cluster in the empty (or absent) directory `d`; it runs until
    `down(d)`."""
    if not available():
        raise RgwError("Ceph is not installed (ceph-mon ceph-osd radosgw ceph-common)")
    if d.exists() and any(d.iterdir()):
        raise RgwError(f"{d} is not empty")
    d = d.absolute()
    for sub in ("run", "log", "crash", "mon.a", "osd.0", "rgw.a"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "pids").write_text("")
    port = port or free_port()
    fsid = str(uuid.uuid4())
    mon_port = free_port()
    tls_port = free_port()
    _make_tls(d / "tls")
    (d / "ceph.conf").write_text(_conf(d, fsid, mon_port, port, tls_port,
                                       osd_size_gib << 30))
    b = _Boot(d)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _start_mon(b, fsid, mon_port)
        _start_osd(b)
        b.start("rgw.a", "radosgw", *b.c, "-f", "-n", "client.rgw.a")
        b.wait("radosgw", lambda: _answers(endpoint + "/"), timeout_s)
        b.run("radosgw-admin", *b.c, "user", "create", "--uid=dock", "--display-name=dock",
              f"--access-key={ACCESS_KEY}", f"--secret-key={SECRET_KEY}")
    except BaseException:
        down(d, keep=True)
        raise
    return Rgw(d, endpoint, ACCESS_KEY, SECRET_KEY, tls_endpoint=f"https://localhost:{tls_port}",
               ca_file=d / "tls" / "ca.pem")


def _make_tls(d: Path) -> None:
    """A throwaway CA and a server certificate for localhost / 127.0.0.1."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dock test store CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (d / "server.key").chmod(0o600)


def _ours(pid: int, conf: Path) -> bool:
    try:
        return str(conf).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def down(d: Path, *, keep: bool = False) -> None:
    """Kill exactly the daemons started in `d` (checked by their command line)."""
    d = d.absolute()
    conf = d / "ceph.conf"
    pids: list[int] = []
    try:
        for line in (d / "pids").read_text().splitlines():
            _, _, p = line.partition(" ")
            if p.strip().isdigit() and _ours(int(p), conf):
                pids.append(int(p))
    except OSError:
        pass
    for pid in reversed(pids):
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    end = time.monotonic() + 10
    while any(_ours(p, conf) and not _zombie(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.1)
    if not keep:
        shutil.rmtree(d, ignore_errors=True)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


_shared: Rgw | None = None
_users = 0


def shared(base: Path) -> Rgw:
    """One gateway per process (a test session or xdist worker), started on first use
    under `base`; `release()` once per `shared()` call stops it after the last user, and
    it is stopped at exit. Clusters of killed earlier test processes are swept first."""
    global _shared, _users
    if _shared is None:
        d = base / f"rgw-{os.getpid()}"
        if d.exists():
            shutil.rmtree(d)
        sweep_orphans(base.parent if base.name.startswith("pytest-") else base.parent.parent)
        _shared = up(d)
        atexit.register(down, d)
    _users += 1
    return _shared


def release() -> None:
    global _shared, _users
    _users -= 1
    if _users <= 0 and _shared is not None:
        down(_shared.dir)
        _shared = None
        _users = 0


def sweep_orphans(root: Path) -> list[Path]:
    """Stop clusters that `shared()` started for test processes that no longer exist
    (killed with SIGKILL, so neither the fixture nor atexit could). `root` is the
    directory above the per-session temp dirs; a dir named rgw-<pid> whose <pid> is
    gone is an orphan. Returns the directories cleaned."""
    done = []
    for pids in [*root.glob("*/rgw-*/pids"), *root.glob("*/*/rgw-*/pids")]:
        d = pids.parent
        owner = d.name.removeprefix("rgw-")
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            down(d)
            done.append(d)
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hw_sim.rgw", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up")
    u.add_argument("dir", type=Path)
    u.add_argument("port", type=int, nargs="?")
    u.add_argument("--bucket", help="also create this bucket")
    u.add_argument("--object-lock", action="store_true", help="the bucket has Object Lock")
    dn = sub.add_parser("down")
    dn.add_argument("dir", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "down":
        down(args.dir)
        return 0
    try:
        r = up(args.dir, args.port)
    except RgwError as exc:
        print(f"rgw: {exc}", file=sys.stderr)
        return 1
    if args.bucket:
        from agent.upload.errors import UploadError
        from agent.upload.s3client import S3Client, S3Config

        try:
            S3Client(S3Config(r.endpoint, args.bucket, r.access_key, r.secret_key, r.region)
                     ).create_bucket(object_lock=args.object_lock)
        except UploadError as exc:
            print(f"rgw: creating bucket {args.bucket}: {exc}", file=sys.stderr)
            down(args.dir, keep=True)
            return 1
    print(f"S3_ENDPOINT={r.endpoint}\nS3_TLS_ENDPOINT={r.tls_endpoint}\n"
          f"S3_CA_FILE={r.ca_file}\nS3_ACCESS_KEY={r.access_key}\n"
          f"S3_SECRET_KEY={r.secret_key}\nS3_REGION={r.region}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def agent_config(root: Path, *, dock_id: str, endpoint: str, bucket: str, region: str,
                 access_key: str, secret_key: str, key_file: Path,
                 upload: dict[str, object] | None = None) -> Path:
    """A storage-only agent config under `root` that uploads to this store (tests, bench):
    state, store and runtime directories inside `root`, credentials in a 0600 file, and
    any further `[upload]` keys from `upload`."""
    creds = root / "s3.credentials"
    creds.write_text(f"access_key = {access_key}\nsecret_key = {secret_key}\n")
    creds.chmod(0o600)
    extra = "".join(f"{k} = {_toml(v)}\n" for k, v in (upload or {}).items())
    cfg = root / "dock-agent.toml"
    cfg.write_text(f"""[dock]
id = "{dock_id}"
state_dir = "{root / 'state'}"
store_dir = "{root / 'evidence'}"
runtime_dir = "{root / 'run'}"
key_file = "{key_file}"

[devices]
allow_storage_only = true
allow = [{{vid = "1234", pid = "5678", storage_only = true}}]

[mqtt]
enabled = false

[upload]
enabled = true
endpoint = "{endpoint}"
bucket = "{bucket}"
region = "{region}"
credentials_file = "{creds}"
{extra}""")
    return cfg


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(v)
