#!/usr/bin/env bash
# ctxguard's single entry point on Linux: installs whatever the build needs that is missing,
# then runs the cargo-make task named on the command line (see Makefile.toml).
#
#   ./make.sh package   # target/package/: signed x64 and arm64 ctxguard.sys, INFs, companion
#   ./make.sh test      # clippy on every target, the package, then `cargo test --workspace`
#
# It is idempotent: on a machine that already has everything it only runs the task.
# It assumes rustup is present; it installs Debian/Ubuntu packages with apt-get (through sudo
# when not root) and cargo-make with `cargo install`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

if [[ $# -lt 1 ]]; then
    echo "usage: $0 <task> [cargo-make arguments...]   (tasks: package, test, clippy)" >&2
    exit 2
fi

log() { printf 'make.sh: %s\n' "$*" >&2; }

# --- Debian/Ubuntu packages, each only when the command it provides is missing -------------
missing_packages=()
# Rust links build scripts and host tests with the system C compiler; rustup does not ship one.
command -v cc >/dev/null 2>&1 || missing_packages+=(gcc libc6-dev)
command -v osslsigncode >/dev/null 2>&1 || missing_packages+=(osslsigncode)
command -v openssl >/dev/null 2>&1 || missing_packages+=(openssl)
# The companion links for x86_64-pc-windows-gnu with mingw-w64's gcc (.cargo/config.toml).
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || missing_packages+=(gcc-mingw-w64-x86-64)
# fltemu's C fixture drivers (fltemu/c-drivers) are compiled by clang in cl mode, linked by
# lld-link, against import libraries llvm-dlltool makes from .def files.
command -v clang >/dev/null 2>&1 || missing_packages+=(clang)
command -v lld-link >/dev/null 2>&1 || missing_packages+=(lld)
command -v llvm-dlltool >/dev/null 2>&1 || missing_packages+=(llvm)
# Debian's wine64 package installs /usr/lib/wine/wine64 and no wine64 on PATH.
if [[ ! -x /usr/lib/wine/wine64 ]] && ! command -v wine64 >/dev/null 2>&1 && ! command -v wine >/dev/null 2>&1; then
    missing_packages+=(wine64)
fi

if [[ ${#missing_packages[@]} -gt 0 ]]; then
    command -v apt-get >/dev/null 2>&1 || {
        log "missing ${missing_packages[*]} and no apt-get: install them with your package manager"
        exit 1
    }
    sudo_cmd=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { log "not root and no sudo: cannot install ${missing_packages[*]}"; exit 1; }
        sudo_cmd=(sudo)
    fi
    log "installing ${missing_packages[*]}"
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing_packages[@]}"
fi

# --- Rust targets and components -----------------------------------------------------------
# A fresh rustup install only reaches PATH in new login shells; use its env file meanwhile.
if ! command -v rustup >/dev/null 2>&1 && [[ -f "${CARGO_HOME:-$HOME/.cargo}/env" ]]; then
    # shellcheck source=/dev/null
    . "${CARGO_HOME:-$HOME/.cargo}/env"
fi
command -v rustup >/dev/null 2>&1 || { log "rustup is required (https://rustup.rs)"; exit 1; }
installed_targets=$(rustup target list --installed)
for target in x86_64-pc-windows-msvc aarch64-pc-windows-msvc x86_64-pc-windows-gnu; do
    grep -qx "$target" <<<"$installed_targets" || rustup target add "$target"
done
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

# --- cargo-make ----------------------------------------------------------------------------
if ! cargo make --version >/dev/null 2>&1; then
    log "installing cargo-make"
    cargo install --locked cargo-make
fi

exec cargo make --makefile Makefile.toml "$@"
