#!/usr/bin/env python3
"""Writes the 200-rule benchmark policy for bench/kernel/run.sh.

    gen-policy.py OUT_DIR AGENT_TYPE PROBE

OUT_DIR/policy.yaml: the policy document (checked with `tyr policy validate` by run.sh);
OUT_DIR/policy.json: tyrd's saved-policy file (`state_dir/policy.json`): the policy as an
overlay for AGENT_TYPE over the built-in audit base, so only the benchmark's agent process
is governed by it.

The rules have the shapes of a real policy (dotfiles and system files, unanchored `/**/x`
rules, a binary-filtered allow, exec and network rules, generated per-project rules) but every
deny and alert rule points at paths under a directory that does not exist, or at names no file
on the machine has, or at the 127.77.0.0/16 / TEST-NET ranges: nothing the machine needs is
denied, and the benchmark's loops (/etc/hostname, /bin/true, 127.0.0.1) are allowed. One deny
rule names PROBE, a file of the benchmark's own temporary directory: run.sh checks that an
agent reading it is killed (the policy is in force) and that another process is not.
"""

import json
import sys

ABSENT = "/tyr-bench-absent"
DOTFILES = [".ssh", ".aws", ".gnupg", ".kube", ".docker", ".config/gcloud", ".azure",
            ".netrc", ".npmrc", ".pypirc", ".git-credentials", ".vault-token", ".terraform.d",
            ".password-store", ".mozilla", ".config/google-chrome", ".bash_history",
            ".zsh_history", ".psql_history", ".m2/settings.xml"]
SYSTEM = ["/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/sudoers.d/**", "/proc/*/mem",
          "/proc/kcore", "/boot/**", "/root/**", "/var/lib/tyrd/**", "/etc/tyr/**",
          "/dev/mem", "/sys/firmware/**"]
UNANCHORED = ["/**/.tyr-bench-env*", "/**/*.tyr-bench-pem", "/**/tyr_bench_id_rsa*",
              "/**/.tyr-bench-git/config"]
EXEC = ["/usr/bin/nc", "/usr/bin/ncat", "/usr/bin/socat", "/usr/bin/nmap", "/tmp/**",
        "/dev/shm/**", "/usr/bin/sudo", "/usr/bin/su"]


def rule(name, action, pattern=None, verdict="deny", severity="high", binaries=(),
         cidrs=(), ports=()):
    return {
        "name": name, "action": action, "resource_pattern": pattern, "cidrs": list(cidrs),
        "ports": [{"start": p, "end": p} for p in ports], "domains": [],
        "sni_pattern": None, "verdict": verdict, "severity": severity,
        "binaries": list(binaries), "agent_types": [], "condition": None,
    }


def rules(probe):
    out = [rule("bench-probe", "file_read", probe, severity="critical"),
           rule("git-reads-ssh", "file_read", f"{ABSENT}/home/*/.ssh/**", "allow", "low",
                binaries=["/usr/bin/git", "/usr/bin/ssh"])]
    for i, d in enumerate(DOTFILES):
        for action in ("file_read", "file_write"):
            out.append(rule(f"dot{i}-{action}", action, f"{ABSENT}/home/*/{d}/**"))
    for i, p in enumerate(SYSTEM):
        for action in ("file_read", "file_write"):
            out.append(rule(f"sys{i}-{action}", action, f"{ABSENT}{p}", severity="critical"))
    for i, p in enumerate(UNANCHORED):
        out.append(rule(f"any{i}", "file_read", p))
    for i, p in enumerate(EXEC):
        out.append(rule(f"exec{i}", "exec", f"{ABSENT}{p}"))
    out.append(rule("net-refused", "net_connect", cidrs=["127.77.0.0/16"]))
    out.append(rule("net-testnet", "net_connect", cidrs=["192.0.2.0/24", "198.51.100.0/24"],
                    ports=[22, 25, 3389]))
    out.append(rule("net-alert", "net_connect", verdict="alert", cidrs=["203.0.113.0/24"]))
    out.append(rule("net-v6", "net_connect", cidrs=["2001:db8::/32"]))
    out.append(rule("notes-alert", "file_write", f"{ABSENT}/notes/**", "alert", "medium"))
    n = 0
    while len(out) < 200:
        kind = n % 4
        if kind == 0:
            out.append(rule(f"app{n}-secrets", "file_read", f"{ABSENT}/srv/app{n}/secrets/**"))
        elif kind == 1:
            out.append(rule(f"vendor{n}-keys", "file_read", f"{ABSENT}/opt/vendor{n}/**/*.key"))
        elif kind == 2:
            out.append(rule(f"p{n}-env", "file_write", f"{ABSENT}/home/*/work/p{n}/.env"))
        else:
            out.append(rule(f"tools{n}", "exec", f"{ABSENT}/opt/tools{n}/bin/*"))
        n += 1
    return out


def yaml(policy):
    lines = ["apiVersion: tyr.dev/v1", "kind: Policy", "metadata:",
             f"  name: {policy['metadata']['name']}", "spec:", "  rules:"]
    for r in policy["spec"]["rules"]:
        lines.append(f"    - name: {r['name']}")
        lines.append(f"      action: {r['action']}")
        if r["resource_pattern"]:
            lines.append(f"      resource_pattern: \"{r['resource_pattern']}\"")
        if r["cidrs"]:
            lines.append(f"      cidrs: {json.dumps(r['cidrs'])}")
        if r["ports"]:
            lines.append(f"      ports: {json.dumps([p['start'] for p in r['ports']])}")
        if r["binaries"]:
            lines.append(f"      binaries: {json.dumps(r['binaries'])}")
        lines.append(f"      verdict: {r['verdict']}")
        lines.append(f"      severity: {r['severity']}")
    return "\n".join(lines) + "\n"


def main():
    out_dir, agent_type, probe = sys.argv[1], sys.argv[2], sys.argv[3]
    policy = {
        "api_version": "tyr.dev/v1", "kind": "Policy",
        "metadata": {"name": "bench-200", "labels": {}, "description": None},
        "spec": {"mode": "enforce", "default": "allow", "rules": rules(probe)},
    }
    assert len(policy["spec"]["rules"]) == 200
    with open(f"{out_dir}/policy.yaml", "w") as f:
        f.write(yaml(policy))
    doc = {"policy_version": "bench-200",
           "effective_set": {"base": None,
                             "overlays": [{"agent_type": agent_type, "policy": policy}]}}
    with open(f"{out_dir}/policy.json", "w") as f:
        json.dump(doc, f)


if __name__ == "__main__":
    main()
