#!/usr/bin/env bash
# Boots the Debian 6.1 guest kernel (BPF LSM active) under QEMU TCG and runs test binaries in it.
#
# Usage: tests/vm/run.sh BINARY... [-- ARGS...]
#   Each BINARY (static, or dynamic: its ldd libraries are copied along) runs in turn as root
#   in the guest with ARGS; a non-zero exit fails the run. Exit status: 0 only when the guest
#   printed `TYR-VM-RESULT: PASS`; 1 on a failed run or timeout; 2 on bad usage; 75 when the
#   kernel cannot be obtained (Debian archive unreachable).
# Environment:
#   TYR_VM_KERNEL   uncompressed vmlinux (default: tests/vm/fetch-kernel.sh)
#   TYR_VM_TIMEOUT  seconds before the guest is killed (default 120)
#   TYR_VM_LSM      the lsm= boot list (default lockdown,capability,landlock,yama,bpf)
#   TYR_VM_LOG      also write the console (CRs stripped) to this file
#   TYR_VM_SMP      number of vCPUs (default 1; the race measurements use 2)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
timeout_s=${TYR_VM_TIMEOUT:-120}
lsm=${TYR_VM_LSM:-lockdown,capability,landlock,yama,bpf}
smp=${TYR_VM_SMP:-1}
case "$smp" in [1-9] | [1-9][0-9]) ;; *) echo "run.sh: bad TYR_VM_SMP: $smp" >&2; exit 2 ;; esac

usage() { echo "usage: $0 BINARY... [-- ARGS...]" >&2; exit 2; }
bins=()
while [ $# -gt 0 ]; do
  [ "$1" = "--" ] && { shift; break; }
  bins+=("$1")
  shift
done
args=("$@")
[ ${#bins[@]} -gt 0 ] || usage

for tool in qemu-system-x86_64 busybox timeout ldd; do
  command -v "$tool" >/dev/null || { echo "run.sh: missing tool: $tool" >&2; exit 1; }
done
kernel=${TYR_VM_KERNEL:-}
if [ -z "$kernel" ]; then
  rc=0
  kernel=$("$here/fetch-kernel.sh") || rc=$?
  [ $rc -eq 0 ] || exit "$rc"
fi
[ -f "$kernel" ] || { echo "run.sh: no kernel at $kernel" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/tyr-vm.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp,tyr}

# busybox-static provides every tool /init uses; skip applets that already exist (the applet
# list contains `busybox` itself, whose self-link would make /init fail with ELOOP).
busybox=$(command -v busybox)
cp "$busybox" "$root/bin/busybox"
for applet in $(busybox --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done

# Copies a dynamic binary's libraries (and loader) to the same paths in the guest.
copy_libs() {
  local out lib
  out=$(ldd "$1" 2>&1) || true
  case "$out" in
  *"not a dynamic executable"* | *"statically linked"*) return 0 ;;
  *"not found"*) echo "run.sh: $1: missing libraries:"$'\n'"$out" >&2; exit 1 ;;
  esac
  grep -o '/[^ ]*' <<<"$out" | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}

quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
guest_args=""
for a in "${args[@]}"; do guest_args+=" $(quote "$a")"; done

runs=""
for bin in "${bins[@]}"; do
  { [ -f "$bin" ] && [ -x "$bin" ]; } || { echo "run.sh: not an executable file: $bin" >&2; exit 2; }
  name=$(basename "$bin")
  [ -e "$root/tyr/$name" ] && { echo "run.sh: two binaries named $name" >&2; exit 2; }
  cp -L "$bin" "$root/tyr/$name"
  copy_libs "$bin"
  runs+="run $(quote "/tyr/$name")$guest_args"$'\n'
done

cat >"$root/init" <<EOF
#!/bin/sh
export PATH=/bin TYR_VM_GUEST=1 HOME=/tmp
mount -t devtmpfs devtmpfs /dev && exec </dev/console >/dev/console 2>&1
# poweroff -f does not return; should it fail, init exits: panic=-1 + -no-reboot end QEMU.
result() { echo "TYR-VM-RESULT: \$*"; poweroff -f; exit 1; }
must_mount() { mount -t "\$1" "\$1" "\$2" || result "FAIL cannot mount \$1 on \$2"; }
must_mount proc /proc
must_mount sysfs /sys
must_mount securityfs /sys/kernel/security
must_mount bpf /sys/fs/bpf
must_mount tracefs /sys/kernel/tracing
must_mount tmpfs /tmp
must_mount cgroup2 /sys/fs/cgroup
ip link set lo up || result "FAIL cannot bring lo up"
lsm=\$(cat /sys/kernel/security/lsm)
case ",\$lsm," in
*,bpf,*) ;;
*) result "FAIL bpf is not an active LSM in the guest (lsm=\$lsm)" ;;
esac
echo "TYR-VM: kernel \$(uname -r), lsm=\$lsm"
run() {
  echo "TYR-VM: running \$*"
  "\$@"
  rc=\$?
  [ \$rc -eq 0 ] || result "FAIL \$1 exited with status \$rc"
}
$runs
result PASS
EOF
chmod +x "$root/init"
(cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null) >"$work/initrd.cpio"

# microvm without a calibrated TSC sometimes hangs at boot: pass the host's frequency.
tsc_khz=$(awk -F: '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo)
cmdline="console=ttyS0 quiet panic=-1 lsm=$lsm${tsc_khz:+ tsc_early_khz=$tsc_khz}"
echo "run.sh: booting $(basename "$kernel") with ${#bins[@]} binaries," \
  "initramfs $(($(stat -c %s "$work/initrd.cpio") / 1024)) KiB" >&2

log=$work/console.log
start=$(date +%s%N)
qemu_rc=0
timeout --kill-after=5 "$timeout_s" qemu-system-x86_64 -M microvm -accel tcg -cpu max \
  -smp "$smp" -m 512 -nodefaults -nographic -no-reboot -serial stdio -monitor none \
  -kernel "$kernel" -initrd "$work/initrd.cpio" -append "$cmdline" </dev/null 2>&1 |
  sed -u 's/\r$//' | tee "$log" || qemu_rc=$?
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
[ -n "${TYR_VM_LOG:-}" ] && cp "$log" "$TYR_VM_LOG"

if grep -qx 'TYR-VM-RESULT: PASS' "$log"; then
  echo "run.sh: PASS in ${elapsed_ms} ms" >&2
  exit 0
fi
reason=$(grep -m1 '^TYR-VM-RESULT: FAIL' "$log" || true)
if [ -z "$reason" ]; then
  reason="no result line (qemu/timeout exit status $qemu_rc; timeout ${timeout_s}s)"
fi
echo "run.sh: FAIL after ${elapsed_ms} ms: $reason" >&2
exit 1
