#!/usr/bin/env bash
# Benchmark: seconds from `berth cluster up -n N` (the image already built) to every node ready,
# and to `etcdctl endpoint health --cluster` healthy from node 1; the memory of each node (RSS
# of its QEMU, and of the switch); then a rolling update of every node to a new version (from a
# channel: the delta from the running root) while the host writes a key every 100 ms through
# the members' forwarded client ports: its wall time, and the longest time without a
# successful write. The images are built from a copy of profiles/ with a fresh release key; the
# cluster lives in a scratch XDG_STATE_HOME and is destroyed at the end, whatever happens.
#
#   benches/cluster.sh [N] [--no-update]     (default 3; each node 1 vCPU, 768 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-3}
update=yes
[ "${2:-}" = --no-update ] && update=
work=$(mktemp -d)
export XDG_STATE_HOME=$work/state
name=bench
cargo build --release -q -p berth
berth=$PWD/target/release/berth
writer=
cleanup() {
  if [ -n "$writer" ]; then kill "$writer" 2>/dev/null || true; fi
  "$berth" cluster destroy --name "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

ws=$work/ws
mkdir -p "$ws"
cp -r profiles overlays kernel-config "$ws/"
rm -f "$ws"/profiles/*.lock
(cd "$ws/profiles" && "$berth" keygen -q bench >/dev/null)
printf 'schema = 1\nextends = "cluster.toml"\n\n[update]\npublic-key = "bench.pub"\n' \
  > "$ws/profiles/bench.toml"
printf 'schema = 1\nextends = "bench.toml"\n\n[image]\nversion = "0.2.0"\n' \
  > "$ws/profiles/bench-v2.toml"
"$berth" build -q "$ws/profiles/bench.toml" --out "$work/img" --signing-key "$ws/profiles/bench.key" \
  >/dev/null
if [ -n "$update" ]; then
  "$berth" build -q "$ws/profiles/bench-v2.toml" --out "$work/img2" --delta-from "$work/img" \
    --signing-key "$ws/profiles/bench.key" >/dev/null
  "$berth" publish -q channel "$work/channel" "$work/img2" --key "$ws/profiles/bench.pub" >/dev/null
fi
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

if [ -n "$update" ]; then
  ports=$(python3 -c 'import json,sys; print(" ".join(str(n["etcd-port"]) for n in json.load(open(sys.argv[1]))["nodes"]))' "$state")
  # The writer: PUT writer/seq every 100 ms, each write tried on the members in turn.
  python3 - "$work/stop" "$work/writes.json" $ports <<'PY' &
import base64, json, os, sys, time, urllib.request
stop, out, ports = sys.argv[1], sys.argv[2], sys.argv[3:]
b64 = lambda s: base64.b64encode(s.encode()).decode()
tried = failed = 0
at, last_ok, gap = 0, time.monotonic(), 0.0
while not os.path.exists(stop):
    tick = time.monotonic()
    tried += 1
    ok = False
    for k in range(len(ports)):
        i = (at + k) % len(ports)
        body = json.dumps({"key": b64("writer/seq"), "value": b64(str(tried))}).encode()
        try:
            r = urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{ports[i]}/v3/kv/put", body,
                {"Content-Type": "application/json"}), timeout=2)
            ok = r.status == 200 and b'"header"' in r.read()
        except Exception:
            ok = False
        if ok:
            at = i
            break
    now = time.monotonic()
    if ok:
        gap, last_ok = max(gap, now - last_ok), now
    else:
        failed += 1
    time.sleep(max(0.0, 0.1 - (now - tick)))
gap = max(gap, time.monotonic() - last_ok)
json.dump({"tried": tried, "failed": failed, "longest-gap": gap}, open(out, "w"))
PY
  writer=$!
  sleep 2
  t1=$(date +%s.%N)
  "$berth" cluster update -q --name "$name" "$work/channel" >/dev/null
  t_update=$(echo "$(date +%s.%N) - $t1" | bc -l)
  sleep 2
  touch "$work/stop"
  wait "$writer"
  writer=
  read -r tried failed gap < <(python3 -c 'import json,sys; w=json.load(open(sys.argv[1])); print(w["tried"], w["failed"], w["longest-gap"])' "$work/writes.json")
  printf '%-44s %8.1f s\n' "rolling update of $n nodes (channel, deltas)" "$t_update"
  printf '%-44s %8.1f s\n' "per node (mean)" "$(echo "$t_update / $n" | bc -l)"
  printf '%-44s %8.2f s\n' "longest time without a write" "$gap"
  printf '%-44s %8s\n' "writes: tried / failed" "$tried / $failed"
fi
t1=$(date +%s.%N)
"$berth" cluster down -q --name "$name" >/dev/null
printf '%-44s %8.1f s\n' "cluster down (clean poweroff of every node)" "$(echo "$(date +%s.%N) - $t1" | bc -l)"
