#!/usr/bin/env bash
# A 3-node cluster on one machine: etcd, three `whorl serve` nodes (groups
# of 2 replicas), one `whorl route` on 127.0.0.1:50051.
#
#   bash deploy/local/cluster.sh start [DIR]   # default DIR: target/local-cluster
#   bash deploy/local/cluster.sh stop  [DIR]
#
# Needs etcd on the PATH (Debian: etcd-server) and a built whorl
# (cargo build --release; WHORL=path/to/whorl to use another). Then:
#   whorl cluster status --etcd http://127.0.0.1:23790 --cluster local
#   whorl enroll --server 127.0.0.1:50051 --subject S1 FILE...
#   whorl identify --server 127.0.0.1:50051 FILE...
set -euo pipefail
cmd=${1:-start}
dir=$(realpath -m "${2:-target/local-cluster}")
whorl=$(realpath "${WHORL:-target/release/whorl}")
etcd_url=http://127.0.0.1:23790

stop() {
  for f in "$dir"/*.pid; do
    [ -e "$f" ] || continue
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
}

if [ "$cmd" = stop ]; then stop; echo "stopped"; exit 0; fi
[ "$cmd" = start ] || { echo "usage: $0 start|stop [DIR]"; exit 2; }
mkdir -p "$dir"
stop

etcd --name local --data-dir "$dir/etcd" --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
  --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
  --initial-cluster local=http://127.0.0.1:23800 >"$dir/etcd.log" 2>&1 &
echo $! >"$dir/etcd.pid"
for _ in $(seq 1 100); do curl -fs "$etcd_url/health" >/dev/null 2>&1 && break; sleep 0.2; done

# Once per cluster (a second run finds it made and leaves it).
"$whorl" cluster init --etcd "$etcd_url" --cluster local --groups 64 --replicas 2 --nodes n0,n1,n2 \
  --gallery criminal:default --gallery immigration:default:notify 2>/dev/null || true

for i in 0 1 2; do
  cat >"$dir/n$i.toml" <<EOF
[server]
listen = "127.0.0.1:5006$i"

[cluster]
name = "local"
etcd = ["$etcd_url"]
node_id = "n$i"
data_dir = "$dir/n$i"

[backend]
choice = "auto"
EOF
  "$whorl" serve --config "$dir/n$i.toml" >"$dir/n$i.log" 2>&1 &
  echo $! >"$dir/n$i.pid"
done

cat >"$dir/router.toml" <<EOF
[server]
listen = "127.0.0.1:50051"
metrics_listen = "127.0.0.1:9108"

[router]
name = "local"
etcd = ["$etcd_url"]
EOF
"$whorl" route --config "$dir/router.toml" >"$dir/router.log" 2>&1 &
echo $! >"$dir/router.pid"

for _ in $(seq 1 300); do
  "$whorl" cluster status --etcd "$etcd_url" --cluster local 2>/dev/null | grep "every group of every gallery is ready" >/dev/null && break
  sleep 1
done
"$whorl" cluster status --etcd "$etcd_url" --cluster local
echo "router on 127.0.0.1:50051 (metrics http://127.0.0.1:9108/metrics); logs in $dir; stop: bash $0 stop $dir"
