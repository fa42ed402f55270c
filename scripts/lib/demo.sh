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
fuse_unavailable() {
    if [ ! -c /dev/fuse ]; then echo "no /dev/fuse"; return 0; fi
    if ! command -v fusermount3 >/dev/null 2>&1; then echo "no fusermount3 (apt install fuse3)"; return 0; fi
    if [ ! -r /dev/fuse ] || [ ! -w /dev/fuse ]; then echo "/dev/fuse is not accessible"; return 0; fi
    if [ "$(id -u)" -ne 0 ] && ! grep -q '^user_allow_other' /etc/fuse.conf 2>/dev/null; then
        echo "not root and user_allow_other is not set in /etc/fuse.conf"; return 0
    fi
    return 1
}

# The demo scenario with BWC00005's FUSE fault replaced by a timeline unplug soon after it
# docks (its replug stays where it is).
scenario_without_fuse() {  # scenario
    grep -v '^faults = { unplug_at' "$1"
    cat <<'TOML'

[[timeline]]
at = 15.0
action = "unplug"
bay = "5"
TOML
}

# The demo agent configuration with every path pointing into the state directory.
demo_config() {  # template state_dir secret_file host port
    sed -e "s|\"\.\./demo-state/|\"$2/|" \
        -e "s|^fleet_secret_file = .*|fleet_secret_file = \"$3\"|" \
        -e "s|^host = .*|host = \"$4\"|" \
        -e "s|^port = .*|port = $5|" "$1"
}
