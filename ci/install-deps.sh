#!/usr/bin/env bash
# Installs what Tessera's build and tests need on a fresh Debian 12 machine:
# QEMU >= 8.1 (bookworm-backports), Bochs, GRUB tools (BIOS and UEFI), OVMF, and the Rust
# target.
# Idempotent: installs only what is missing. Used by .ci/run and by `cargo xtask`.
set -euo pipefail

need_apt=()
qemu_ok() {
    command -v qemu-system-x86_64 >/dev/null 2>&1 || return 1
    local v
    v=$(qemu-system-x86_64 --version | head -n1 | sed -E 's/.*version ([0-9]+)\.([0-9]+).*/\1 \2/')
    set -- $v
    [ "$1" -gt 8 ] || { [ "$1" -eq 8 ] && [ "$2" -ge 1 ]; }
}
qemu_ok || need_qemu=1
command -v bochs >/dev/null 2>&1 || need_apt+=(bochs bochsbios vgabios)
# Bochs' headless display (`display_library: term`) is a separate package; without it Bochs
# stops with "display library 'term' not available".
[ -e /usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_term_gui.so ] || need_apt+=(bochs-term)
{ command -v grub-mkrescue >/dev/null 2>&1 && [ -d /usr/lib/grub/i386-pc ]; } || need_apt+=(grub-pc-bin grub-common)
# UEFI: GRUB's UEFI modules make grub-mkrescue's ISOs hybrid (BIOS and UEFI), and OVMF is
# the firmware of `cargo xtask run --boot uefi` (docs/emulators.md).
[ -d /usr/lib/grub/x86_64-efi ] || need_apt+=(grub-efi-amd64-bin)
{ [ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] && [ -f /usr/share/OVMF/OVMF_VARS_4M.fd ]; } || need_apt+=(ovmf)
command -v xorriso >/dev/null 2>&1 || need_apt+=(xorriso)
command -v mformat >/dev/null 2>&1 || need_apt+=(mtools)
# `cargo xtask linux-images` (userland/linux): apt-get download, then dpkg-deb | tar and gzip.
# All are in a Debian base system; listed so a trimmed image gets them back.
command -v dpkg-deb >/dev/null 2>&1 || need_apt+=(dpkg)
command -v tar >/dev/null 2>&1 || need_apt+=(tar)
command -v gzip >/dev/null 2>&1 || need_apt+=(gzip)

if [ "${need_qemu:-0}" = 1 ] || [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "error: missing packages; run as root: $0" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [ "${need_qemu:-0}" = 1 ]; then
        echo 'deb http://deb.debian.org/debian bookworm-backports main' \
            > /etc/apt/sources.list.d/backports.list
    fi
    apt-get update -q
    if [ "${need_qemu:-0}" = 1 ]; then
        apt-get install -y -q -t bookworm-backports qemu-system-x86
    fi
    if [ ${#need_apt[@]} -gt 0 ]; then
        apt-get install -y -q "${need_apt[@]}"
    fi
fi

# The toolchain file names the target; rustup installs it on first use, but do it
# explicitly so a failure shows here rather than mid-build.
here=$(cd "$(dirname "$0")/.." && pwd)
(cd "$here" && rustup target add x86_64-unknown-none >/dev/null 2>&1 || true)
qemu-system-x86_64 --version | head -n1
