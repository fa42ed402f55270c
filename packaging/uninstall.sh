#!/usr/bin/env bash
# Remove dock-agent: stops and disables the service, removes the program
# (/opt/dock-agent), the units and the udev rules.
# Left in place on purpose: the evidence store and custody ledger (/var/lib/dock-agent),
# the configuration and fleet secret (/etc/dock-agent) and the dock-agent user — they
# are evidence or are needed to read and verify it. Remove them by hand, only under
# your retention rules.
# Options:
#   --destdir DIR   remove a staged install under DIR (no systemctl/udevadm)
set -euo pipefail

DESTDIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --destdir) DESTDIR="$(realpath -m "${2:?--destdir needs a directory}")"; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "uninstall.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
say() { printf 'uninstall.sh: %s\n' "$*"; }

if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
    echo "uninstall.sh: run as root (sudo packaging/uninstall.sh)" >&2
    exit 1
fi

units=(dock-screen.service dock-agent.service dock-mount.socket dock-mount.service)
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    for unit in "${units[@]}"; do
        systemctl disable --now "$unit" 2>/dev/null || true
    done
fi
for unit in "${units[@]}"; do
    rm -f "$DESTDIR/etc/systemd/system/$unit"
done
rm -f "$DESTDIR/etc/udev/rules.d/90-dock-agent.rules"
rm -rf -- "$DESTDIR/opt/dock-agent"
if [ -z "$DESTDIR" ]; then
    if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
    if command -v udevadm >/dev/null 2>&1; then udevadm control --reload || true; fi
fi
say "removed the program, units and udev rules"
say "kept: $DESTDIR/var/lib/dock-agent (evidence, ledger), $DESTDIR/etc/dock-agent (config,"
say "      fleet secret) and the dock-agent user"
