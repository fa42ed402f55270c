# shellcheck shell=bash
# Sourced by scripts/demo and scripts/test: install what they need, idempotently.
#   - apt packages that are missing (sudo when not root; apt-get update only if needed)
#   - the virtual environment .venv with `pip install -e '.[dev]' -e packaging/sim` (the
#     simulator is a dev package of its own), redone only when pyproject.toml or
#     packaging/sim/pyproject.toml changed (their hash is stored in the venv)
# DOCK_SKIP_APT=1 skips the apt step; DOCK_SKIP_BOOTSTRAP=1 skips both.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${DOCK_VENV:-$ROOT/.venv}"
APT_PACKAGES=(python3 python3-venv mosquitto mosquitto-clients fuse3 dosfstools
              mtools util-linux systemd
              ceph-mon ceph-osd radosgw ceph-common chromium fonts-wqy-microhei)
# Only the test command needs these (lint, signature checks, headless pages): the demo never installs them.
TEST_APT_PACKAGES=(shellcheck openssl poppler-utils b3sum)
# Only the HIL machine needs these (a guest disk that loses unflushed writes).
HIL_APT_PACKAGES=(nbdkit)

say() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        say "need root for: $* (sudo is not installed)"
        return 1
    fi
}

missing_apt_packages() {
    local p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            printf '%s\n' "$p"
        fi
    done
}

ensure_apt() {
    [ "${DOCK_SKIP_APT:-}" = 1 ] && return 0
    command -v dpkg-query >/dev/null 2>&1 || { say "not a Debian system; skipping apt"; return 0; }
    local missing
    mapfile -t missing < <(missing_apt_packages "$@")
    [ "${#missing[@]}" -eq 0 ] && return 0
    say "installing apt packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Package lists are fetched only when absent or stale enough that an install fails.
    if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
        as_root apt-get -o DPkg::Lock::Timeout=600 update -q
    fi
    if ! as_root apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"; then
        as_root apt-get -o DPkg::Lock::Timeout=600 update -q
        as_root apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
    fi
}

ensure_venv() {
    local want stamp="$VENV/.dock-agent-pyproject.sha256"
    want="$(cat "$ROOT/pyproject.toml" "$ROOT/packaging/sim/pyproject.toml" | sha256sum | cut -d' ' -f1)"
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating virtual environment $VENV"
        python3 -m venv "$VENV"
    fi
    say "installing dock-agent and its development dependencies into $VENV"
    # the simulator (hw_sim, dock-sim) is a dev package of its own: never in the production wheel
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "${ROOT}[dev]" \
        -e "$ROOT/packaging/sim"
    printf '%s\n' "$want" >"$stamp"
}

bootstrap() {
    # `bootstrap test` (scripts/test, hence .ci/run) also installs the test-only tools;
    # `bootstrap demo`, `bootstrap hil`: what those run.
    # Tests that run these scripts set DOCK_SKIP_BOOTSTRAP=1: the environment is ready.
    [ "${DOCK_SKIP_BOOTSTRAP:-}" = 1 ] && return 0
    if [ "${1:-}" = test ]; then
        ensure_apt "${APT_PACKAGES[@]}" "${TEST_APT_PACKAGES[@]}"
    elif [ "${1:-}" = hil ]; then
        ensure_apt "${APT_PACKAGES[@]}" "${HIL_APT_PACKAGES[@]}"
    else
        ensure_apt "${APT_PACKAGES[@]}"
    fi
    ensure_venv
}
