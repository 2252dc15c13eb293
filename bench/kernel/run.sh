#!/usr/bin/env bash
# Kernel-side cost of tyrd (tracepoint tier) per syscall, against no tyrd and against auditd.
# Run as root from anywhere: bench/kernel/run.sh. Figures and commands: bench/BENCHMARKS.md.
#
# Phases (each loop is bench/kernel/loop.c, compiled here; medians over ROUNDS rounds):
#   1. baseline / near-empty programs on the raw syscall tracepoints (floor.bpf.c: what the
#      kernel charges for tyrd's hooks alone; floor-percall.bpf.c: the per-call openat
#      tracepoints tyrd used before; open and getppid loops only) / tyrd + non-agent process /
#      tyrd + agent process (`tyr run --agent-type claude-code`, governed by a 200-rule overlay
#      from gen-policy.py): open+close, getppid (a syscall no hook decides), fork+exec, TCP
#      connect. tyrd runs standalone (no server: its policy is state_dir/policy.json) and is
#      restarted every round; the order of the configurations alternates between rounds.
#      With BEFORE_TYRD=PATH (another tyrd binary, e.g. a copy of an earlier build), every
#      round also measures nonagent-before / agent-before with it, for before/after figures
#      taken in the same run.
#   2. per-program BPF cost (kernel.bpf_stats_enabled=1, restored afterwards).
#   3. tyrd RSS and tyr_procs entries with SPAWN_N live processes (half of them agents), then
#      after CHURN_N fork+_exit of an agent process.
#   4. auditd (one non-matching openat rule; every openat logged) on the open loop, alternating
#      with a baseline measured in the same phase. Last, because once audit has been enabled
#      the kernel gives every new task an audit context until reboot (audit_ever_enabled).
#      auditd is stopped and its rules deleted at the end and on error.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
OPEN_N=${OPEN_N:-1000000}
EXEC_N=${EXEC_N:-2000}
CONNECT_N=${CONNECT_N:-20000}
SPAWN_N=${SPAWN_N:-10000}
CHURN_N=${CHURN_N:-1000000}
OPEN_PATH=${OPEN_PATH:-/etc/hostname}
AGENT=${AGENT:-claude-code}
SKIP_AUDITD=${SKIP_AUDITD:-}
RESULTS=${RESULTS:-/tmp/tyr-bench-kernel.txt}
CLEAN_WAIT=${CLEAN_WAIT:-60}  # seconds to wait before a run for other tyr_* programs to go
PROFILE=${PROFILE:-release}  # `debug` for a quick check of the script itself
SRC=${SRC:-}                 # source tree to build tyrd/tyr from (default: this repository)
BEFORE_TYRD=${BEFORE_TYRD:-} # a tyrd binary to compare with (configurations *-before)
GETPPID_N=${GETPPID_N:-3000000}
LOOPS=${LOOPS:-open getppid exec connect}  # the loops of phases 1 and 2

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
SRC=${SRC:-$repo}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

missing=()
command -v cc >/dev/null || missing+=(gcc)
command -v bpftool >/dev/null || missing+=(bpftool)
command -v python3 >/dev/null || missing+=(python3)
command -v clang >/dev/null || missing+=(clang)
[ -f /usr/include/bpf/libbpf.h ] || missing+=(libbpf-dev)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

work=$(mktemp -d /tmp/tyr-bench.XXXXXX)
tyrd_pid=
auditd_started=
stats_old=$(cat /proc/sys/kernel/bpf_stats_enabled)
exec 7>/dev/null 8>/dev/null 9>/dev/null

stop_tyrd() {
    if [ -n "$tyrd_pid" ]; then
        kill -TERM "$tyrd_pid" 2>/dev/null || true
        wait "$tyrd_pid" 2>/dev/null || true
        tyrd_pid=
    fi
}

stop_auditd() {
    command -v auditctl >/dev/null || return 0
    auditctl -D >/dev/null 2>&1 || true
    if [ -f /var/run/auditd.pid ]; then
        local pid
        pid=$(cat /var/run/auditd.pid)
        kill -TERM "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    auditctl -e 0 >/dev/null 2>&1 || true
}

cleanup() {
    exec 7>&- 8>&- 9>&-
    wait_jobs
    stop_tyrd
    [ -z "$auditd_started" ] || stop_auditd
    echo "$stats_old" >/proc/sys/kernel/bpf_stats_enabled
    rm -rf "$work"
}

# Waits for every background job except tyrd (the spawners exit on EOF of their gate).
wait_jobs() {
    local j
    for j in $(jobs -p); do
        [ "$j" = "$tyrd_pid" ] || wait "$j" 2>/dev/null || true
    done
}
trap cleanup EXIT

say() { echo "$*" | tee -a "$RESULTS"; }
: >"$RESULTS"

echo "==> building ($PROFILE) and compiling the loop"
(cd "$SRC" && cargo build --profile "${PROFILE/debug/dev}" --quiet -p tyrd -p tyr-cli)
tyrd=${CARGO_TARGET_DIR:-$SRC/target}/$PROFILE/tyrd
tyr=${CARGO_TARGET_DIR:-$SRC/target}/$PROFILE/tyr
loop=$work/loop
cc -O2 -Wall -pthread -o "$loop" "$here/loop.c"
cc -O2 -Wall -o "$work/floor" "$here/floor.c" -lbpf
for obj in floor floor-percall; do
    clang -O2 -target bpf -c "$here/$obj.bpf.c" -o "$work/$obj.bpf.o"
done

say "# $(date -u +%FT%TZ) $(uname -r) nproc=$(nproc) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
say "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
say "# source: $SRC, tyr.bpf.c sha256 $(sha256sum "$SRC/crates/tyrd/bpf/tyr.bpf.c" | cut -c1-12)$( [ "$SRC" != "$repo" ] || echo ", uncommitted in crates/tyrd/bpf: $(cd "$repo" && git diff --stat -- crates/tyrd/bpf | tail -1)")"
foreign() { python3 "$here/bpfstat.py" foreign "${tyrd_pid:-0}"; }
f=$(foreign)
[ "$f" = 0 ] || say "# WARNING: $f tyr_* BPF programs of another tyrd or test are loaded; runs are tagged and medians use clean runs"

probe=$work/probe-secret
echo secret >"$probe"
mkdir -p "$work/state"
python3 "$here/gen-policy.py" "$work" "$AGENT" "$probe"
"$tyr" policy validate -f "$work/policy.yaml" >/dev/null
cp "$work/policy.json" "$work/state/policy.json"
cat >"$work/tyrd.yaml" <<YAML
server: 127.0.0.1:9
name: bench
ca_file: $work/no-ca.pem
state_dir: $work/state
buffer_size_mb: 64
tier: tracepoint
log_level: info
YAML

# start_tyrd [BINARY]: the tyrd built here, or BINARY.
start_tyrd() {
    : >"$work/tyrd.log"
    TYRD_BPF_PIN_DIR="" NO_COLOR=1 "${1:-$tyrd}" --config "$work/tyrd.yaml" run >/dev/null 2>"$work/tyrd.log" &
    tyrd_pid=$!
    ready() { grep -q 'policy loaded.*bench-200' "$work/tyrd.log" && grep -q 'enforcement tier=' "$work/tyrd.log"; }
    for _ in $(seq 1 600); do
        ready && break
        kill -0 "$tyrd_pid" 2>/dev/null || { cat "$work/tyrd.log"; exit 1; }
        sleep 0.1
    done
    ready || { cat "$work/tyrd.log"; exit 1; }
    grep -q 'tier=Tracepoint' "$work/tyrd.log" || { echo "tyrd is not at tier tracepoint:"; cat "$work/tyrd.log"; exit 1; }
}

# Whether `tyr run` gives an agent our policy (the probe read is killed). Another tyrd on the
# host (a test) can remove or replace the shared tyr-agents cgroups when it stops.
governed() {
    local s
    s=$( { "$tyr" run --agent-type "$AGENT" -- cat "$probe" >/dev/null 2>&1; } 2>/dev/null; echo $?)
    [ "$s" = 137 ]
}
ensure_governed() {
    governed && return 0
    echo "  (agents not governed: the tyr-agents cgroup was removed or replaced; restarting tyrd)"
    stop_tyrd
    start_tyrd
    governed || { echo "the policy is not in force for agents" >&2; exit 1; }
}

# run CONFIG MODE ARGS...: one loop, as an agent when CONFIG is "agent" (dropped when the
# agent was not governed throughout).
run() {
    local config=$1
    shift
    local out
    if [ "${config%-before}" = agent ]; then
        ensure_governed
        out=$("$tyr" run --agent-type "$AGENT" -- "$loop" "$@") || out=
        if [ -z "$out" ] || ! governed; then
            echo "  $phase agent $* dropped: the agent was not governed throughout"
            return 0
        fi
    else
        out=$("$loop" "$@")
    fi
    local f waited=0
    f=$(foreign)
    while [ "$f" != 0 ] && [ "$waited" -lt "$CLEAN_WAIT" ]; do
        sleep 1
        waited=$((waited + 1))
        f=$(foreign)
    done
    echo "$phase $config $out $f" >>"$work/raw"
    echo "  $phase $config $out$( [ "$f" = 0 ] || echo " ($f foreign tyr_* programs loaded)")"
}

has_loop() { [[ " $LOOPS " == *" $1 "* ]]; }
loops() {
    ! has_loop open || run "$1" open "$OPEN_PATH" "$OPEN_N"
    ! has_loop getppid || run "$1" getppid "$GETPPID_N"
    ! has_loop exec || run "$1" exec "$EXEC_N"
    ! has_loop connect || run "$1" connect "$CONNECT_N"
}

echo "==> checking that the policy is in force for agents only"
start_tyrd
cat "$probe" >/dev/null
governed || { echo "an agent reading the probe was not killed: the policy is not in force" >&2; exit 1; }
stop_tyrd

# The open loop with near-empty programs on the two raw tracepoints tyrd's syscall hooks use:
# what the kernel charges for the hooks alone (configuration `floor`); and on the per-call
# openat tracepoints tyrd used before (configuration `floor-percall`).
floor_of() {
    mkfifo "$work/floor-gate"
    "$work/floor" "$work/$1.bpf.o" <"$work/floor-gate" >"$work/floor-out" &
    local pid=$!
    exec 9>"$work/floor-gate"
    until grep -q attached "$work/floor-out" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { echo "the $1 programs did not attach" >&2; exit 1; }
        sleep 0.1
    done
    ! has_loop open || run "$1" open "$OPEN_PATH" "$OPEN_N"
    ! has_loop getppid || run "$1" getppid "$GETPPID_N"
    exec 9>&-
    wait_jobs
    rm -f "$work/floor-gate" "$work/floor-out"
}
floor() {
    has_loop open || has_loop getppid || return 0
    floor_of floor
    floor_of floor-percall
}

echo "==> phase 1: $ROUNDS rounds of baseline / empty programs / tyrd non-agent / tyrd agent"
phase=tyrd
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then
        loops base
        floor
        start_tyrd; loops nonagent; loops agent; stop_tyrd
        [ -z "$BEFORE_TYRD" ] || { start_tyrd "$BEFORE_TYRD"; loops nonagent-before; loops agent-before; stop_tyrd; }
    else
        [ -z "$BEFORE_TYRD" ] || { start_tyrd "$BEFORE_TYRD"; loops agent-before; loops nonagent-before; stop_tyrd; }
        start_tyrd; loops agent; loops nonagent; stop_tyrd
        floor
        loops base
    fi
done

echo "==> phase 2: per-program BPF cost (kernel.bpf_stats_enabled=1)"
start_tyrd
echo 1 >/proc/sys/kernel/bpf_stats_enabled
snap() { python3 "$here/bpfstat.py" progs "$tyrd_pid" >"$work/stats.$1"; }
cpu_ms() { awk '{printf "%d", ($14 + $15) * 1000 / '"$(getconf CLK_TCK)"'}' "/proc/$tyrd_pid/stat"; }
stats_step() {
    local name=$1 c0 c1
    shift
    snap before
    c0=$(cpu_ms)
    phase=stats run "$@" >/dev/null
    c1=$(cpu_ms)
    snap after
    say "bpf_stats $name (tyrd user+system CPU meanwhile: $((c1 - c0)) ms):"
    python3 "$here/bpfstat.py" delta "$work/stats.before" "$work/stats.after" | tee -a "$RESULTS"
}
if has_loop open; then
    stats_step "non-agent open $OPEN_PATH x$OPEN_N" nonagent open "$OPEN_PATH" "$OPEN_N"
    stats_step "agent open $OPEN_PATH x$OPEN_N" agent open "$OPEN_PATH" "$OPEN_N"
fi
if has_loop exec; then
    stats_step "non-agent exec x$EXEC_N" nonagent exec "$EXEC_N"
    stats_step "agent exec x$EXEC_N" agent exec "$EXEC_N"
fi
if has_loop connect; then
    stats_step "non-agent connect x$CONNECT_N" nonagent connect "$CONNECT_N"
    stats_step "agent connect x$CONNECT_N" agent connect "$CONNECT_N"
fi
if [ -n "$BEFORE_TYRD" ]; then
    stop_tyrd
    start_tyrd "$BEFORE_TYRD"
    stats_step "BEFORE_TYRD non-agent open $OPEN_PATH x$OPEN_N" nonagent open "$OPEN_PATH" "$OPEN_N"
    stats_step "BEFORE_TYRD agent open $OPEN_PATH x$OPEN_N" agent open "$OPEN_PATH" "$OPEN_N"
    stats_step "BEFORE_TYRD agent exec x$EXEC_N" agent exec "$EXEC_N"
    stats_step "BEFORE_TYRD agent connect x$CONNECT_N" agent connect "$CONNECT_N"
    stop_tyrd
    start_tyrd
fi
echo "$stats_old" >/proc/sys/kernel/bpf_stats_enabled

echo "==> phase 3: tyrd RSS with $SPAWN_N live processes, then $CHURN_N short-lived ones"
rss() { awk -v k="$1:" '$1 == k {printf "%.1f MB", $2 / 1024}' "/proc/$tyrd_pid/status"; }
rss_parts() { awk '$1 ~ /^Rss(Anon|File|Shmem):$/ {printf "%s %.1f MB ", $1, $2 / 1024}' "/proc/$tyrd_pid/status"; }
procs() { python3 "$here/bpfstat.py" count tyr_procs "$tyrd_pid"; }
say "tyrd idle: VmRSS $(rss VmRSS) ($(rss_parts)), tyr_procs entries $(procs)"
mkfifo "$work/gate1" "$work/gate2"
ensure_governed
"$loop" spawn $((SPAWN_N / 2)) <"$work/gate1" >"$work/spawn1" &
"$tyr" run --agent-type "$AGENT" -- "$loop" spawn $((SPAWN_N / 2)) <"$work/gate2" >"$work/spawn2" &
exec 7>"$work/gate1" 8>"$work/gate2"
until grep -q ready "$work/spawn1" 2>/dev/null && grep -q ready "$work/spawn2" 2>/dev/null; do sleep 0.2; done
say "tyrd with $SPAWN_N live processes ($((SPAWN_N / 2)) agents): VmRSS $(rss VmRSS), tyr_procs entries $(procs)"
exec 7>&- 8>&-
wait_jobs
say "tyrd after they exited: VmRSS $(rss VmRSS), VmHWM $(rss VmHWM), tyr_procs entries $(procs)"
phase=churn run agent churn "$CHURN_N" | tee -a "$RESULTS"
say "tyrd after $CHURN_N agent fork+exit: VmRSS $(rss VmRSS) ($(rss_parts)), VmHWM $(rss VmHWM), tyr_procs entries $(procs)"
grep -E 'WARN|ERROR' "$work/tyrd.log" | tail -5 | sed 's/^/# tyrd log: /' | tee -a "$RESULTS" || true
stop_tyrd

if [ -z "$SKIP_AUDITD" ]; then
    echo "==> phase 4: $ROUNDS rounds of baseline / auditd one rule / auditd all openat (open loop)"
    # Installed only now: the package starts auditd, which enables audit for good.
    command -v auditctl >/dev/null || apt-get install -y --no-install-recommends auditd
    auditd_started=1
    [ -f /var/run/auditd.pid ] && kill -0 "$(cat /var/run/auditd.pid)" 2>/dev/null || auditd
    until [ -f /var/run/auditd.pid ] && auditctl -s | grep -q "pid $(cat /var/run/auditd.pid)"; do sleep 0.1; done
    auditctl -D >/dev/null
    auditctl -e 1 >/dev/null
    phase=audit
    full_n=$((OPEN_N / 10))
    audit_one() { auditctl -a always,exit -F arch=b64 -S openat -F uid=54321 >/dev/null; run audit-one-rule open "$OPEN_PATH" "$OPEN_N"; auditctl -D >/dev/null; }
    audit_all() { auditctl -a always,exit -F arch=b64 -S openat >/dev/null; run audit-all-openat open "$OPEN_PATH" "$full_n"; auditctl -D >/dev/null; }
    for r in $(seq 1 "$ROUNDS"); do
        if [ $((r % 2)) = 1 ]; then
            run base open "$OPEN_PATH" "$OPEN_N"; audit_one; audit_all
        else
            audit_all; audit_one; run base open "$OPEN_PATH" "$OPEN_N"
        fi
    done
    stop_auditd
fi

say "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
say "medians (ns per iteration) [min-max] over $ROUNDS rounds, overhead against the baseline of the same phase:"
python3 - "$work/raw" <<'EOF' | tee -a "$RESULTS"
import collections, statistics, sys
every = collections.defaultdict(list)
for line in open(sys.argv[1]):
    phase, config, mode, n, wall, cpu, foreign = line.split()
    if phase in ("tyrd", "audit"):
        every[(phase, mode, config)].append(((float(cpu), float(wall)), int(foreign)))
# Runs while another tyrd or test had programs attached are left out when clean runs exist.
runs = {}
for k, v in every.items():
    clean = [ns for ns, f in v if f == 0]
    runs[k] = clean or [ns for ns, _ in v]
    if len(runs[k]) < len(v):
        print(f"  ({k[0]} {k[1]} {k[2]}: {len(v) - len(runs[k])} of {len(v)} runs left out, foreign programs)")
    elif not clean:
        print(f"  ({k[0]} {k[1]} {k[2]}: every run had foreign programs loaded)")
for clock, i in (("CPU time", 0), ("wall time", 1)):
    print(f" {clock}:")
    med = {k: statistics.median(x[i] for x in v) for k, v in runs.items()}
    for (phase, mode, config), m in sorted(med.items()):
        base = med.get((phase, mode, "base"))
        extra = f" {100 * (m / base - 1):+6.1f} % ({m - base:+.0f} ns)" if base and config != "base" else ""
        xs = [x[i] for x in runs[(phase, mode, config)]]
        print(f"  {phase:<5} {mode:<8} {config:<17} {m:>11.0f} [{min(xs):.0f}-{max(xs):.0f}]{extra}")
    floor = med.get(("tyrd", "open", "floor"), 0) - med.get(("tyrd", "open", "base"), 0)
    for who in ("nonagent", "agent"):
        ours = med.get(("tyrd", "open", who), 0) - med.get(("tyrd", "open", "base"), 0)
        if floor > 0 and ours > 0:
            print(f"  open overhead, tyrd {who} beyond the empty programs: {ours - floor:+.0f} ns"
                  f" ({100 * (ours - floor) / med[('tyrd', 'open', 'base')]:+.1f} % of the base)")
    for config in ("audit-one-rule", "audit-all-openat"):
        theirs = med.get(("audit", "open", config), 0) - med.get(("audit", "open", "base"), 0)
        for who in ("nonagent", "agent"):
            ours = med.get(("tyrd", "open", who), 0) - med.get(("tyrd", "open", "base"), 0)
            if theirs > 0:
                print(f"  open overhead, tyrd {who} / {config}: {ours / theirs:.2f}")
EOF
echo "results: $RESULTS"
