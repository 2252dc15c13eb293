#!/usr/bin/env python3
"""bpftool queries for bench/kernel/run.sh, restricted to the programs a given tyrd holds
(the prog_id/map_id lines of its /proc/PID/fdinfo: this bpftool lists no owner pids).

    bpfstat.py progs PID            JSON {program: [run_time_ns, run_cnt]} (needs
                                    kernel.bpf_stats_enabled=1 for non-zero figures)
    bpfstat.py count MAP PID        number of entries of that tyrd's map MAP
    bpfstat.py foreign PID          number of tyr_* programs not held by PID (0: none is ours)
    bpfstat.py delta BEFORE AFTER   table of ns/call per program between two `progs` files
"""

import json
import os
import subprocess
import sys


def bpftool(*args):
    out = subprocess.run(["bpftool", "-j", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout or "null")


def held_ids(pid, key):
    """The ids (`prog_id` or `map_id`) of the BPF objects process `pid` has file descriptors for."""
    ids = set()
    if pid == 0:
        return ids
    d = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(d):
        try:
            for line in open(f"{d}/{fd}"):
                if line.startswith(key + ":"):
                    ids.add(int(line.split()[1]))
        except OSError:
            pass
    return ids


def tyrd_progs(pid):
    ours = held_ids(pid, "prog_id")
    progs = [p for p in bpftool("prog", "show")
             if p.get("name", "").startswith("tyr_") and p["id"] in ours]
    if not progs:
        sys.exit(f"no tyr_* program held by pid {pid}")
    return progs


def foreign(pid):
    ours = held_ids(pid, "prog_id")
    print(sum(1 for p in bpftool("prog", "show")
              if p.get("name", "").startswith("tyr_") and p["id"] not in ours))


def progs(pid):
    out = {}
    for p in tyrd_progs(pid):
        out[p["name"]] = [p.get("run_time_ns", 0), p.get("run_cnt", 0)]
    print(json.dumps(out))


def count(name, pid):
    ids = held_ids(pid, "map_id") | {m for p in tyrd_progs(pid) for m in p.get("map_ids", [])}
    for map_id in sorted(ids):
        if bpftool("map", "show", "id", str(map_id)).get("name") == name:
            print(len(bpftool("map", "dump", "id", str(map_id)) or []))
            return
    sys.exit(f"map {name} not found among the maps of pid {pid}")


def delta(before_file, after_file):
    before = json.load(open(before_file))
    after = json.load(open(after_file))
    for name in sorted(after):
        t0, c0 = before.get(name, [0, 0])
        t1, c1 = after[name]
        if c1 > c0:
            print(f"  {name:<16} {c1 - c0:>9} calls {(t1 - t0) / (c1 - c0):>8.0f} ns/call")


def main():
    cmd = sys.argv[1:]
    if len(cmd) == 2 and cmd[0] == "progs":
        progs(int(cmd[1]))
    elif len(cmd) == 2 and cmd[0] == "foreign":
        foreign(int(cmd[1]))
    elif len(cmd) == 3 and cmd[0] == "count":
        count(cmd[1], int(cmd[2]))
    elif len(cmd) == 3 and cmd[0] == "delta":
        delta(cmd[1], cmd[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
