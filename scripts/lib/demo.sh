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
demo_config() {  # template state_dir secret_file host port
    sed -e "s|\"\.\./demo-state/|\"$2/|" \
        -e "s|^fleet_secret_file = .*|fleet_secret_file = \"$3\"|" \
        -e "s|^host = .*|host = \"$4\"|" \
        -e "s|^port = .*|port = $5|" "$1"
}
