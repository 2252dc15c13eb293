#!/usr/bin/env bash
# Obtains the guest kernel for the VM tests: Debian 12's linux-image-amd64 (6.1, BPF LSM built
# in), extracted to an uncompressed `vmlinux` that QEMU boots directly (PVH).
#
# Usage: tests/vm/fetch-kernel.sh [--refresh]
#   Prints the path of the cached vmlinux on stdout; progress goes to stderr.
#   A cached kernel is reused without touching the network; --refresh (or TYR_VM_REFRESH=1)
#   re-resolves the current Debian version and downloads it if it changed.
# Cache: ${TYR_VM_CACHE:-/var/cache/tyr-vm}/<package-version>/vmlinux, `current` links to it.
# Exit codes: 0 ok, 1 error, 75 the Debian archive cannot be reached (callers may skip).
set -euo pipefail

CACHE=${TYR_VM_CACHE:-/var/cache/tyr-vm}
REFRESH=${TYR_VM_REFRESH:-0}
[ "${1:-}" = "--refresh" ] && REFRESH=1

log() { echo "fetch-kernel: $*" >&2; }
die() { log "error: $*"; exit "${2:-1}"; }

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
rm -rf "$CACHE"/.work.* # left by an interrupted run

if [ "$REFRESH" != 1 ] && [ -f "$CACHE/current/vmlinux" ]; then
  echo "$CACHE/current/vmlinux"
  exit 0
fi

for tool in apt-get apt-cache dpkg-deb xz grep; do
  command -v "$tool" >/dev/null || die "missing tool: $tool"
done

# The concrete image package (linux-image-6.1.0-N-amd64) linux-image-amd64 depends on.
resolve_package() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-6\.1[^ ]*-amd64\)$/\1/p' | head -1
}
# Only reached on a cold cache or a refresh: current lists make the download URL valid.
log "apt-get update"
apt-get update -qq >&2 || die "apt-get update failed: Debian archive unreachable" 75
pkg=$(resolve_package)
[ -n "$pkg" ] || die "cannot resolve the linux-image-6.1 package of linux-image-amd64"
ver=$(apt-cache policy "$pkg" | sed -n 's/^ *Candidate: //p')
{ [ -n "$ver" ] && [ "$ver" != "(none)" ]; } || die "no candidate version for $pkg"
dir="$CACHE/$pkg-$ver"

if [ ! -f "$dir/vmlinux" ]; then
  work=$(mktemp -d "$CACHE/.work.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  log "downloading $pkg $ver"
  # apt-get download drops privileges to _apt where it can; the work dir must be writable.
  chmod 777 "$work"
  (cd "$work" && apt-get download -qq "$pkg=$ver" >&2) ||
    die "apt-get download $pkg=$ver failed: Debian archive unreachable" 75
  deb=$(ls "$work"/*.deb)
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" --wildcards './boot/vmlinuz-*'
  vmlinuz=$(ls "$work"/boot/vmlinuz-*)
  # The bzImage embeds an XZ stream; find its magic (FD 37 7A 58 5A 00) and unpack it.
  offset=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | head -1 | cut -d: -f1)
  [ -n "$offset" ] || die "no XZ payload in $vmlinuz"
  # (xz stops reading after the stream: no pipe from tail, whose SIGPIPE would fail pipefail)
  xz -dc --single-stream < <(tail -c +$((offset + 1)) "$vmlinuz") >"$work/vmlinux" ||
    die "cannot decompress the XZ payload of $vmlinuz"
  [ "$(head -c 4 "$work/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ] ||
    die "the decompressed payload is not an ELF image"
  log "checking that it boots with the BPF LSM active"
  TYR_VM_KERNEL=$work/vmlinux TYR_VM_TIMEOUT=60 "$(dirname "$0")/run.sh" \
    "$(command -v busybox)" -- true >/dev/null ||
    die "the extracted kernel does not boot to a PASS under tests/vm/run.sh"
  mkdir -p "$dir"
  mv "$work/vmlinux" "$dir/vmlinux"
  log "extracted $dir/vmlinux ($(($(stat -c %s "$dir/vmlinux") >> 20)) MiB)"
fi

ln -sfn "$(basename "$dir")" "$CACHE/current.new"
mv -T "$CACHE/current.new" "$CACHE/current"
# Drop older kernels.
for old in "$CACHE"/linux-image-*; do
  [ "$old" = "$dir" ] || rm -rf "$old"
done
echo "$CACHE/current/vmlinux"
