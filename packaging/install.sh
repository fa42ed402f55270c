#!/usr/bin/env bash
# Install dock-agent on Debian 12 / Raspberry Pi OS (bookworm). Run as root from a clone:
#   sudo packaging/install.sh [--dock-id ID] [--no-start]
# Safe to re-run (upgrade): an existing config or fleet secret is never overwritten.
# Options:
#   --dock-id ID    dock.id written into a newly installed config (default: host name)
#   --no-start      enable the service but do not start it now
#   --no-venv       do not build /opt/dock-agent/venv (tests, or a venv managed elsewhere)
#   --wheels DIR    install from the wheels in DIR, offline (used by the .deb)
#   --destdir DIR   stage the files under DIR (packaging, tests): no apt, no user, no
#                   ownership changes, no systemctl/udevadm
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
DESTDIR=""
DOCK_ID=""
START=1
VENV=1
WHEELS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dock-id) DOCK_ID="${2:?--dock-id needs a value}"; shift 2 ;;
        --no-start) START=0; shift ;;
        --no-venv) VENV=0; shift ;;
        --wheels) WHEELS="$(realpath "${2:?--wheels needs a directory}")"; shift 2 ;;
        --destdir) DESTDIR="$(realpath -m "${2:?--destdir needs a directory}")"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

PREFIX="$DESTDIR/opt/dock-agent"
ETC="$DESTDIR/etc/dock-agent"
UNITS="$DESTDIR/etc/systemd/system"
RULES="$DESTDIR/etc/udev/rules.d"
USER_NAME=dock-agent
say() { printf 'install.sh: %s\n' "$*"; }

if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo packaging/install.sh)" >&2
    exit 1
fi

# ---- packages and the system user
if [ -z "$DESTDIR" ]; then
    missing=()
    for p in python3 python3-venv; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$p")
    done
    if [ "${#missing[@]}" -ne 0 ]; then
        say "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${missing[@]}" \
            || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
                 --no-install-recommends "${missing[@]}"; }
    fi
    if ! getent passwd "$USER_NAME" >/dev/null; then
        say "creating system user $USER_NAME"
        useradd --system --user-group --home-dir /var/lib/dock-agent --no-create-home \
            --shell /usr/sbin/nologin --comment "dock agent" "$USER_NAME"
    fi
    usermod --append --groups dialout "$USER_NAME"
fi

# owner ROOT:GROUP MODE PATH — ownership only on a real install
own() {
    if [ -z "$DESTDIR" ]; then chown "$1" "$3"; fi
    chmod "$2" "$3"
}

# ---- program
install -d -m 0755 "$PREFIX"
install -m 0644 "$SRC/README.md" "$PREFIX/README.md"
rm -rf "$PREFIX/docs"
install -d -m 0755 "$PREFIX/docs"
if [ -d "$SRC/docs" ]; then
    cp -R "$SRC/docs/." "$PREFIX/docs/"  # the units' Documentation= pages
fi
if [ "$VENV" = 1 ]; then
    say "installing the agent into $PREFIX/venv"
    [ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
    pip=("$PREFIX/venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade)
    if [ -n "$WHEELS" ]; then
        "${pip[@]}" --no-index --find-links "$WHEELS" dock-agent
    else
        "${pip[@]}" "$SRC"
    fi
fi
if [ -x "$PREFIX/venv/bin/dock-agent" ]; then
    dock_agent() { "$PREFIX/venv/bin/dock-agent" "$@"; }
else  # the config tools need only the standard library
    dock_agent() { PYTHONPATH="$SRC${PYTHONPATH:+:$PYTHONPATH}" python3 -m agent.cli "$@"; }
fi

# ---- configuration and fleet secret (never overwritten)
install -d -m 0750 "$ETC"
own "root:$USER_NAME" 0750 "$ETC"
config="$ETC/dock-agent.toml"
if [ -e "$config" ]; then
    say "keeping existing $config"
else
    id="${DOCK_ID:-$(hostname -s 2>/dev/null || hostname)}"
    id="$(printf '%s' "$id" | tr -c 'A-Za-z0-9._-' '-' | cut -c1-64)"
    tmp="$(mktemp)"
    sed "s/^id = \"dock-01\"$/id = \"$id\"/" "$SRC/config/dock-agent.example.toml" >"$tmp"
    install -m 0640 "$tmp" "$config"
    rm -f "$tmp"
    own "root:$USER_NAME" 0640 "$config"
    say "installed $config (dock.id = \"$id\"); edit [[devices.allow]] and [mqtt]"
fi
secret="$ETC/fleet.secret"
if [ -e "$secret" ]; then
    say "keeping existing $secret"
else
    tmp="$(mktemp)"
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$tmp"
    printf '\n' >>"$tmp"
    install -m 0640 "$tmp" "$secret"
    rm -f "$tmp"
    own "root:$USER_NAME" 0640 "$secret"
    say "generated fleet secret $secret; provision recorders with the same secret"
fi

# ---- udev rules (from the config's allowlist) and units
install -d -m 0755 "$RULES" "$UNITS"
rules_tmp="$(mktemp)"
dock_agent --udev-rules --config "$config" >"$rules_tmp"
install -m 0644 "$rules_tmp" "$RULES/90-dock-agent.rules"
rm -f "$rules_tmp"
units=(dock-agent.service)
for unit in dock-mount.socket dock-mount.service dock-screen.service; do
    if [ -e "$SRC/systemd/$unit" ]; then units+=("$unit"); fi
done
for unit in "${units[@]}"; do
    install -m 0644 "$SRC/systemd/$unit" "$UNITS/$unit"
done
say "installed units: ${units[*]}"

if [ -n "$DESTDIR" ]; then say "staged under $DESTDIR"; exit 0; fi

# ---- validate, then enable and start
config_ok=1
dock_agent --check-config "$config" || config_ok=0
if [ ! -d /run/systemd/system ]; then
    say "systemd is not running: enable later with: systemctl enable --now dock-agent"
    [ "$config_ok" = 1 ] || exit 1
    exit 0
fi
systemctl daemon-reload
if command -v udevadm >/dev/null 2>&1; then
    udevadm control --reload
    udevadm trigger --action=change --subsystem-match=tty --subsystem-match=block || true
fi
if [ -e "$UNITS/dock-mount.socket" ]; then
    systemctl enable --now dock-mount.socket
fi
if [ "$config_ok" != 1 ]; then
    say "fix $config (see above), then: systemctl enable --now dock-agent"
    exit 1
fi
services=(dock-agent.service)
if [ -e "$UNITS/dock-screen.service" ]; then services+=(dock-screen.service); fi
if [ "$START" = 1 ]; then
    systemctl enable "${services[@]}"
    systemctl restart "${services[@]}"
    say "dock-agent is running: systemctl status dock-agent; journalctl -u dock-agent -f"
    if [ -e "$UNITS/dock-screen.service" ]; then
        say "dock screen: http://127.0.0.1:8470/ (kiosk browser on the dock's display)"
    fi
else
    systemctl enable "${services[@]}"
    say "dock-agent is enabled; start it with: systemctl start ${services[*]}"
fi
