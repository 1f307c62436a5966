#!/usr/bin/env bash
# Benchmark: seconds from `berth cluster up -n N` (the image already built) to every node ready,
# and to `etcdctl endpoint health --cluster` healthy from node 1; then the memory of each node
# (RSS of its QEMU, and of the switch). The cluster lives in a scratch XDG_STATE_HOME and is
# destroyed at the end, whatever happens.
#
#   benches/cluster.sh [N]      (default 3; each node 1 vCPU, 768 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-3}
work=$(mktemp -d)
export XDG_STATE_HOME=$work/state
name=bench
cargo build --release -q -p berth
berth=$PWD/target/release/berth
trap '"$berth" cluster destroy --name "$name" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

"$berth" build -q profiles/cluster.toml --out "$work/img" >/dev/null
t0=$(date +%s.%N)
"$berth" cluster up -q -n "$n" --name "$name" "$work/img" >/dev/null
t_ready=$(echo "$(date +%s.%N) - $t0" | bc -l)
healthy=
for _ in $(seq 120); do
  if "$berth" cluster ssh --name "$name" "$name-1" etcdctl endpoint health --cluster \
      >"$work/health" 2>&1; then
    healthy=$(echo "$(date +%s.%N) - $t0" | bc -l)
    break
  fi
  sleep 2
done
[ -n "$healthy" ] || { echo "etcd not healthy after 240 s:" >&2; cat "$work/health" >&2; exit 1; }

state=$XDG_STATE_HOME/berth/clusters/$name/cluster.json
printf '%-44s %8.1f s\n' "cluster up -n $n: every node ready" "$t_ready"
printf '%-44s %8.1f s\n' "etcd healthy from $name-1 (--cluster)" "$healthy"
total=0
for pid in $(python3 -c 'import json,sys; print(" ".join(str(n["pid"]) for n in json.load(open(sys.argv[1]))["nodes"]))' "$state"); do
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
  total=$((total + rss))
  printf '%-44s %8.1f MiB\n' "RSS of node QEMU (pid $pid)" "$(echo "$rss / 1024" | bc -l)"
done
sw=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["switch-pid"])' "$state")
printf '%-44s %8.1f MiB\n' "RSS of vde_switch" "$(echo "$(awk '/^VmRSS/ {print $2}' "/proc/$sw/status") / 1024" | bc -l)"
printf '%-44s %8.1f MiB\n' "RSS per node (mean)" "$(echo "$total / $n / 1024" | bc -l)"
t1=$(date +%s.%N)
"$berth" cluster down -q --name "$name" >/dev/null
printf '%-44s %8.1f s\n' "cluster down (clean poweroff of every node)" "$(echo "$(date +%s.%N) - $t1" | bc -l)"
