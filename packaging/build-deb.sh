#!/usr/bin/env bash
# Build a .deb of dock-agent for this machine's architecture (Debian 12 / Raspberry Pi OS):
#   packaging/build-deb.sh [--out DIR]          -> DIR/dock-agent_<version>_<arch>.deb
# The package carries the agent and all its dependencies as wheels, so installing it needs
# no network. Its postinst runs packaging/install.sh --wheels (user, venv, config, fleet
# secret, udev rules, units). Removing it keeps /etc/dock-agent and /var/lib/dock-agent,
# even on purge: they hold the configuration, the evidence store and the custody ledger.
# Build on the target distribution (the wheels match its Python and architecture); needs
# python3-pip and network access to PyPI. DOCK_DEB_PIP_ARGS adds pip arguments (tests use
# --no-deps).
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$SRC/dist"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$(realpath -m "${2:?--out needs a directory}")"; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "build-deb.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

# The version is written once, in agent/__init__.py (pyproject.toml reads it from there).
version="$(python3 -c 'import re, sys; print(re.search(r"^__version__ = \"([^\"]+)\"", open(sys.argv[1]).read(), re.M).group(1))' "$SRC/agent/__init__.py")"
arch="$(dpkg --print-architecture)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"  # becomes / on the target: never 0700
share="$stage/opt/dock-agent/share"

# ---- payload: wheels, and what install.sh needs from the source tree
mkdir -p "$stage/opt/dock-agent/wheels" "$share/packaging" "$share/config" "$share/systemd"
read -r -a pip_extra <<<"${DOCK_DEB_PIP_ARGS:-}"
python3 -m pip wheel -q --disable-pip-version-check "${pip_extra[@]}" \
    --wheel-dir "$stage/opt/dock-agent/wheels" "$SRC"
install -m 0755 "$SRC/packaging/install.sh" "$SRC/packaging/uninstall.sh" "$share/packaging/"
install -m 0644 "$SRC/config/dock-agent.example.toml" "$SRC/config/dock-agent.schema.json" \
    "$share/config/"
install -m 0644 "$SRC"/systemd/*.service "$SRC"/systemd/*.socket "$share/systemd/"
install -m 0644 "$SRC/README.md" "$share/"
cp -R "$SRC/docs" "$share/docs"

# ---- control files
mkdir -p "$stage/DEBIAN"
cat >"$stage/DEBIAN/control" <<CONTROL
Package: dock-agent
Version: $version
Architecture: $arch
Maintainer: dock-agent developers <dock-agent@localhost>
Depends: python3 (>= 3.11), python3-venv, passwd, udev
Recommends: systemd
Section: misc
Priority: optional
Description: docking-station agent for body-worn recorders
 Detects docked recorders, checks and sets their clocks, offloads footage
 bit-for-bit with BLAKE3 hashes into an evidence store with a tamper-evident
 custody ledger, and reports custody and health over MQTT.
CONTROL
cat >"$stage/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    /opt/dock-agent/share/packaging/install.sh --wheels /opt/dock-agent/wheels
fi
SCRIPT
cat >"$stage/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl disable --now dock-screen.service dock-agent.service dock-mount.socket \
        dock-mount.service \
        >/dev/null 2>&1 || true
fi
SCRIPT
cat >"$stage/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
# Evidence, ledger and configuration (/var/lib/dock-agent, /etc/dock-agent) stay, even on purge.
set -e
if [ "$1" = remove ] || [ "$1" = purge ]; then
    rm -f /etc/systemd/system/dock-agent.service /etc/systemd/system/dock-mount.socket \
        /etc/systemd/system/dock-mount.service /etc/systemd/system/dock-screen.service \
        /etc/udev/rules.d/90-dock-agent.rules
    rm -rf /opt/dock-agent/venv /opt/dock-agent/docs /opt/dock-agent/README.md
    rmdir /opt/dock-agent 2>/dev/null || true
    if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
fi
SCRIPT
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"

mkdir -p "$OUT"
deb="$OUT/dock-agent_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
