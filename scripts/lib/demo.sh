# shellcheck shell=bash
# Helpers for scripts/demo (sourced after bootstrap.sh, which defines ROOT, VENV and say).

free_port() {
    "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() {  # host port seconds
    "$VENV/bin/python" - "$@" <<'PY'
import socket, sys, time
host, port, limit = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while time.monotonic() < limit:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
}

# Lazily unmount FUSE views a killed earlier run may have left under DIR, so that emptying
# DIR never reaches into a mount.
release_mounts() {  # dir
    local target
    command -v findmnt >/dev/null 2>&1 || return 0
    while IFS= read -r target; do
        case "$target" in
            "$1"/*) fusermount3 -uz "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || true ;;
        esac
    done < <(findmnt -rn -o TARGET)
}

# Prints why FUSE cannot serve the file-layer faults (and succeeds), or fails if it can.
# Prints why FUSE cannot serve the simulator's file-layer faults (and succeeds), or fails if
# it can: the device and fusermount3 must be there and a trial mount must work (containers
# often have the device but not the right to mount).
# DOCK_DEMO_NO_FUSE=1 pretends FUSE is missing (to see that path on a machine that has it).
fuse_unavailable() {  # scratch_dir
    if [ "${DOCK_DEMO_NO_FUSE:-}" = 1 ]; then echo "DOCK_DEMO_NO_FUSE=1"; return 0; fi
    if [ ! -c /dev/fuse ]; then echo "no /dev/fuse"; return 0; fi
    if ! command -v fusermount3 >/dev/null 2>&1; then echo "no fusermount3 (apt install fuse3)"; return 0; fi
    if ! "$VENV/bin/python" - "$1" >/dev/null 2>&1 <<'PY'
import asyncio, sys
from pathlib import Path
from hw_sim.fusemount import FaultMount

async def probe(scratch: Path) -> None:
    (scratch / "backing").mkdir(parents=True, exist_ok=True)
    (scratch / "backing" / "probe").write_bytes(b"ok")
    mount = FaultMount(scratch / "backing", scratch / "media")
    await mount.start()
    try:
        assert (scratch / "media" / "probe").read_bytes() == b"ok"
    finally:
        await mount.stop()

asyncio.run(probe(Path(sys.argv[1])))
PY
    then
        echo "a trial FUSE mount failed"; return 0
    fi
    return 1
}

# The demo scenario without BWC00005's FUSE fault (scripts/demo then pulls it out itself).
scenario_without_fuse() {  # scenario
    grep -v '^faults = { unplug_at' "$1"
}
# The demo agent configuration with every path pointing into the state directory.
# Paths and the host are written as TOML strings whatever they hold (a state directory
# named with a quote, a backslash, `&` or `|` must not break the file or the sed script).
demo_config() {  # template state_dir secret_file host port
    local state secret host
    state="$(sed_text "$(toml_text "$2")")"
    secret="$(sed_text "$(toml_text "$3")")"
    host="$(sed_text "$(toml_text "$4")")"
    sed -e "s|\"\.\./demo-state/|\"$state/|" \
        -e "s|^fleet_secret_file = .*|fleet_secret_file = \"$secret\"|" \
        -e "s|^host = .*|host = \"$host\"|" \
        -e "s|^port = .*|port = $(sed_text "$5")|" "$1"
}

toml_text() {  # text: the inside of a TOML basic string holding it
    local s="$1"
    s="${s//\\/\\\\}"
    s="${s//\"/\\\"}"
    printf '%s' "$s"
}

sed_text() {  # text: a sed replacement (delimiter |) that inserts it literally
    local s="$1"
    s="${s//\\/\\\\}"
    s="${s//&/\\&}"
    s="${s//|/\\|}"
    printf '%s' "$s"
}

# ---- the local object store (Ceph RGW from Debian's packages) the demo uploads to
# Starts a throwaway single-node cluster under DIR with bucket BUCKET (Object Lock on) and
# writes the credentials file; prints the S3 endpoint. Fails if Ceph is not installed.
start_object_store() {  # dir bucket credentials_file
    local out
    "$VENV/bin/python" -m hw_sim.rgw down "$1" 2>/dev/null || true  # a killed earlier run
    out="$("$VENV/bin/python" -m hw_sim.rgw up "$1" --bucket "$2" --object-lock)" || return 1
    ( umask 077
      printf 'access_key = %s\nsecret_key = %s\n' \
          "$(sed -n 's/^S3_ACCESS_KEY=//p' <<<"$out")" \
          "$(sed -n 's/^S3_SECRET_KEY=//p' <<<"$out")" >"$3" )
    sed -n 's/^S3_ENDPOINT=//p' <<<"$out"
}

# The [upload] and [retention] sections of the demo: the store above, and (demo only) a
# purge as soon as the store acknowledges a file, so the ledger shows it.
object_store_config() {  # endpoint bucket credentials_file
    cat <<TOML

[upload]
enabled = true
endpoint = "$(toml_text "$1")"
region = "default"
bucket = "$(toml_text "$2")"
prefix = "demo-dock"
credentials_file = "$(toml_text "$3")"
poll_s = 2.0
backoff_min_s = 1.0
backoff_max_s = 10.0
while_offloading_mib_s = 8.0
object_lock_mode = "GOVERNANCE"

[retention]
purge = true
min_days_on_dock = 0
purge_after_days = 0
retention_days = 365
check_interval_s = 2.0
TOML
}

# Waits until every stored file is uploaded, and purged unless held (or the time is up).
wait_uploads_settled() {  # db seconds
    "$VENV/bin/python" - "$@" <<'PY'
import sqlite3, sys, time
db, limit = sys.argv[1], time.monotonic() + float(sys.argv[2])
while time.monotonic() < limit:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        # settled: every file uploaded, and purged unless a hold keeps it on the dock
        files, open_ = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(purged_us IS NULL AND NOT EXISTS (SELECT 1 FROM"
            " evidence_holds h WHERE h.file_id = e.id AND h.cleared_us IS NULL)), 0)"
            " FROM evidence_files e").fetchone()
        pending = conn.execute("SELECT (SELECT COUNT(*) FROM purge_intents) + (SELECT COUNT(*)"
                               " FROM upload_queue WHERE state != 'uploaded')").fetchone()[0]
    except sqlite3.Error:
        files, open_, pending = 1, 1, 0
    finally:
        conn.close()
    if files and not open_ and not pending:
        sys.exit(0)
    time.sleep(0.5)
sys.exit(1)
PY
}

# One uploaded object as the store has it: its key, ETag, lock and custody metadata.
show_uploaded_object() {  # db endpoint bucket credentials_file
    "$VENV/bin/python" - "$@" <<'PY'
import sqlite3, sys
from agent.upload.credentials import load_credentials
from agent.upload.objects import decode_meta
from agent.upload.s3client import S3Client, S3Config
db, endpoint, bucket, creds_file = sys.argv[1:5]
conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
row = conn.execute("SELECT object_key FROM upload_queue WHERE state = 'uploaded'"
                   " ORDER BY file_id LIMIT 1").fetchone()
if row is None:
    sys.exit("no uploaded file")
creds = load_credentials(__import__("pathlib").Path(creds_file))
info = S3Client(S3Config(endpoint, bucket, creds.access_key, creds.secret_key,
                         "default")).head(row[0])
if info is None:
    sys.exit(f"{row[0]} is not in the store")
print(f"s3://{bucket}/{info.key}")
print(f"  size {info.size}  etag {info.etag}  version {info.version_id}")
print(f"  object lock {info.lock_mode} until {info.lock_until}")
def printable(text: str) -> str:  # recorder-supplied values: no control characters
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
for k, v in sorted(info.metadata.items()):
    print(f"  x-amz-meta-{printable(k)}: {printable(decode_meta(v))}")
PY
}

# The central service puts a recorder's footage under hold before it has even docked
# (set-hold over MQTT, repeated with the same id until the dock replies): the hold's scope
# also covers the files offloaded later, so they are uploaded but stay on the dock.
central_hold() {  # host port dock_id serial reply_log
    local topic="dock/v1/$3" payload sub try
    payload="{\"id\": \"demo-hold-$4\", \"args\": {\"hold_id\": \"complaint-2026-117\","
    payload+=" \"reason\": \"complaint 2026-117: keep on the dock\", \"scope\": {\"serial\": \"$4\"}}}"
    for try in 1 2 3 4 5 6 7 8 9 10; do
        mosquitto_sub -h "$1" -p "$2" -t "$topic/reply/set-hold" -C 1 -W 4 -v >"$5" 2>&1 &
        sub=$!
        sleep 0.5
        mosquitto_pub -h "$1" -p "$2" -q 1 -t "$topic/cmd/set-hold" -m "$payload" || true
        if wait "$sub" && [ -s "$5" ]; then
            return 0
        fi
        : "no reply yet (try $try); the agent may still be starting"
    done
    return 1
}
