#!/usr/bin/env bash
# Installs everything swiftgate needs to build and test, idempotently.
# Reuses what is present; safe to run on every invocation (fast when done).
#
#   - the pinned eBPF toolchain (nightly, LLVM 22) with rust-src
#   - llvm-22-dev and bpf-linker built against it
#   - the system tools the tests and benchmarks drive (iproute2, nftables, ...)
#   - a Python virtual environment with the outside clients the tests drive
#     (scripts/python-requirements.txt: the PyPI `netbird` REST client, Schemathesis)
set -euo pipefail

EBPF_TOOLCHAIN="${SWIFTGATE_EBPF_TOOLCHAIN:-nightly-2026-06-20}"
BPF_LINKER_VERSION="${SWIFTGATE_BPF_LINKER_VERSION:-}"
APT_PACKAGES=(llvm-22-dev iproute2 nftables iputils-ping tcpdump iperf3 bpftool
  protobuf-compiler libprotobuf-dev wireguard-go wireguard-tools ethtool conntrack
  python3 python3-venv coturn)

log() { printf '[bootstrap] %s\n' "$*" >&2; }

# 1. System packages (only when one is missing, so a warm machine skips apt).
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing apt packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. Rust toolchains: the stable one in rust-toolchain.toml, and the eBPF nightly.
need_toolchain() {
  local tc="$1"; shift
  if ! rustup run "$tc" rustc --version >/dev/null 2>&1; then
    log "installing toolchain $tc"
    rustup toolchain install "$tc" --profile minimal "$@"
  fi
}
STABLE_TOOLCHAIN=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$(dirname "$0")/../rust-toolchain.toml")
need_toolchain "$STABLE_TOOLCHAIN" --component rustfmt,clippy
need_toolchain "$EBPF_TOOLCHAIN" --component rust-src,clippy
for comp in rust-src clippy; do
  if ! rustup component list --toolchain "$EBPF_TOOLCHAIN" --installed 2>/dev/null | grep -q "^$comp"; then
    rustup component add "$comp" --toolchain "$EBPF_TOOLCHAIN"
  fi
done

# 3. bpf-linker, built against LLVM 22 (the toolchain above emits LLVM 22 bitcode).
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
if ! "$CARGO_BIN/bpf-linker" --version >/dev/null 2>&1; then
  log "building bpf-linker against llvm-22 (takes a few minutes once)"
  ver=(); [ -n "$BPF_LINKER_VERSION" ] && ver=(--version "$BPF_LINKER_VERSION")
  PATH=/usr/lib/llvm-22/bin:$PATH cargo +"$STABLE_TOOLCHAIN" install bpf-linker --locked \
    --no-default-features --features llvm-22 "${ver[@]}"
fi
# 4. The Python clients the tests drive, pinned, in a virtual environment of their own
#    (rebuilt when the requirements change).
PYENV="${SWIFTGATE_PYENV:-${XDG_CACHE_HOME:-$HOME/.cache}/swiftgate/pyenv}"
REQS="$(dirname "$0")/python-requirements.txt"
want=$(sha256sum "$REQS" | cut -d' ' -f1)
if [ "$(cat "$PYENV/.requirements-sha256" 2>/dev/null)" != "$want" ]; then
  log "installing the Python test clients into $PYENV"
  rm -rf "$PYENV"
  /usr/bin/python3 -m venv "$PYENV"
  "$PYENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQS"
  echo "$want" >"$PYENV/.requirements-sha256"
fi
log "ready"
