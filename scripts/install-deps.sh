#!/usr/bin/env bash
# Install what vigil needs on Debian 12 (bookworm), as root: system packages via apt
# (QEMU 10 from bookworm-backports), and the Python package into ./.venv.
# Idempotent: re-running installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_root() { [ "$(id -u)" = 0 ] || { echo "install-deps: run as root" >&2; exit 1; }; }

backports_source() {
    # Derive a bookworm-backports entry from the machine's own Debian sources (no host named here).
    local f=/etc/apt/sources.list.d/vigil-backports.sources
    [ -f "$f" ] && return 0
    local uri
    uri=$(awk '/^URIs:/{u=$2} /^Suites:/ && /bookworm( |$)/ {print u; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [ -z "$uri" ]; then
        uri=$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    fi
    [ -n "$uri" ] || { echo "install-deps: no Debian bookworm source found to derive backports from" >&2; exit 1; }
    cat >"$f" <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    echo "install-deps: added bookworm-backports ($f)"
}

qemu_ok() {
    command -v qemu-system-x86_64 >/dev/null || return 1
    local v; v=$(qemu-system-x86_64 --version | awk 'NR==1{print $4}')
    [ "${v%%.*}" -ge 10 ]
}

system_packages() {
    local pkgs=(qemu-utils etcd-server etcd-client busybox-static iproute2 nftables iptables iputils-ping
                python3-venv openssl procps util-linux mount e2fsprogs kmod xz-utils zstd cpio
                chromium libatomic1 libstdc++6  # the dashboard test's browser; Playwright's bundled node needs the two libraries
                ipmitool openipmi)  # fencing over IPMI, and the lab's IPMI BMC emulator (ipmi_sim)
    local missing=()
    for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if ! qemu_ok || [ ${#missing[@]} -gt 0 ]; then
        backports_source
        apt-get update -qq
        export DEBIAN_FRONTEND=noninteractive
        [ ${#missing[@]} -gt 0 ] && apt-get install -y -qq --no-install-recommends "${missing[@]}"
        if ! qemu_ok; then
            apt-get install -y -qq --no-install-recommends -t bookworm-backports \
                qemu-system-x86 qemu-utils qemu-system-data ipxe-qemu seabios
        fi
    fi
    # etcd-server starts a system etcd on install; vigil runs its own members.
    if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then
        systemctl disable --now etcd >/dev/null 2>&1 || true
    fi
}

python_env() {
    local py=${PYTHON:-python3}
    [ -x .venv/bin/python ] || "$py" -m venv .venv
    if ! .venv/bin/python -c 'import vigil, aetcd, qemu.qmp, typer, pytest' 2>/dev/null \
       || [ pyproject.toml -nt .venv/.installed ]; then
        .venv/bin/pip install -q --upgrade pip
        .venv/bin/pip install -q -e '.[test]'
        touch .venv/.installed
    fi
}

need_root
if [ "${1:-}" = "--backports-only" ]; then  # for the package's install path (scripts/install-check)
    backports_source; apt-get update -qq; exit 0
fi
system_packages
[ "${1:-}" = "--system-only" ] || python_env
echo "install-deps: ok ($(qemu-system-x86_64 --version | head -1))"
