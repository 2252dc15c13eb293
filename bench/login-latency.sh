#!/usr/bin/env bash
# Login latency: release tyr-server on loopback, 20 sequential successful logins over HTTPS.
# Run from the repository root after `cargo build --release -p tyr-server`.
set -euo pipefail
d=$(mktemp -d); chmod 700 "$d"
TYR_DATA_DIR=$d TYR_REST_BIND=127.0.0.1:37701 TYR_GRPC_BIND=127.0.0.1:37700 "${TYR_SERVER_BIN:-target/release/tyr-server}" >"$d/log" 2>&1 &
pid=$!
until curl -fsS --cacert "$d/ca.pem" https://127.0.0.1:37701/health >/dev/null 2>&1; do sleep 0.1; done
curl -fsS --cacert "$d/ca.pem" -H 'content-type: application/json' -d '{"username":"admin","password":"correct horse battery"}' https://127.0.0.1:37701/api/v1/auth/setup >/dev/null
for i in $(seq 1 20); do
  curl -s -o /dev/null -w '%{time_total}\n' --cacert "$d/ca.pem" -H 'content-type: application/json' \
    -d '{"username":"admin","password":"correct horse battery"}' https://127.0.0.1:37701/api/v1/auth/login
done | sort -n | awk '{a[NR]=$1} END {printf "logins=%d p50=%.1f ms p95=%.1f ms max=%.1f ms\n", NR, a[int(NR*0.5)]*1000, a[int(NR*0.95)]*1000, a[NR]*1000}'
kill $pid; rm -rf "$d"
