#!/usr/bin/env bash
# A flood of idle clients against an import, with the importing gateway in a
# 512 MiB memory cgroup (the DaemonSet's limit): the import's default limit
# (10,000 streams at once) refuses the excess, [tunnel] first_byte_timeout
# cuts clients on whose streams no byte moved, a real client keeps being
# served through the same import (at the limit it takes the slot of the
# client silent longest), and the kernel never OOM-kills the gateway.
#
#   apt-get install nginx-light curl jq python3
#   cargo build --release -p strait && sudo bash bench/idle-flood.sh
#
# Root only (it makes a cgroup v1 memory group, removed at exit). FLOOD
# (default 18,000, below this machine's open-file limit of 20,000) idle
# connections from SOURCES client addresses (default 1: 127.0.0.10; more
# take 127.0.0.11, ...) are opened at once and held for HOLD seconds
# (default 40), while a real client at 127.0.0.2 makes a request every
# 100 ms;
# the gateways run their default configuration with first_byte_timeout
# set to FIRST_BYTE (default "30s"). Everything listens on 127.0.0.1 and
# stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/pair.sh
STRAIT=${STRAIT:-target/release/strait}
FLOOD=${FLOOD:-18000}
HOLD=${HOLD:-40}
FIRST_BYTE=${FIRST_BYTE:-30s}
LIMIT=${LIMIT:-512M}
SOURCES=${SOURCES:-1}
[ "$(id -u)" = 0 ] || { echo "needs root (a memory cgroup)" >&2; exit 2; }
CG=/sys/fs/cgroup/memory
[ -d "$CG" ] || { echo "no cgroup v1 memory controller at $CG" >&2; exit 2; }
for tool in nginx curl jq python3; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
[ -x "$STRAIT" ] || { echo "build it first: cargo build --release -p strait" >&2; exit 2; }

dir=$(mktemp -d)
group=$CG/strait-flood-$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rmdir "$group" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

P_NGINX=25101 P_E=25102 P_W=25103 P_AE=25104 P_AW=25105 P_IMPORT=25106
strait_pki
nginx_1k $P_NGINX 32768
pids+=($!)
{ gateway_head e us-east "127.0.0.1:$P_E" "127.0.0.1:$P_AE"; cat <<EOF; } >"$dir/east.toml"
[[export]]
service = "web"
target = "127.0.0.1:$P_NGINX"
EOF
{ gateway_head w eu-west "127.0.0.1:$P_W" "127.0.0.1:$P_AW"; cat <<EOF; } >"$dir/west.toml"
[tunnel]
first_byte_timeout = "$FIRST_BYTE"
[[peer]]
region = "us-east"
addresses = ["127.0.0.1:$P_E"]
[[import]]
service = "web"
listen = "127.0.0.1:$P_IMPORT"
EOF
"$STRAIT" gateway run --config "$dir/east.toml" 2>"$dir/east.log" &
pids+=($!)
# The importing gateway starts inside the cgroup.
mkdir "$group"
echo "$LIMIT" >"$group/memory.limit_in_bytes"
bash -c "echo \$\$ > $group/cgroup.procs; exec $STRAIT gateway run --config $dir/west.toml" 2>"$dir/west.log" &
west=$!
pids+=($west)
for _ in $(seq 1 100); do
  curl -s "http://127.0.0.1:$P_AW/status" | jq -e '.peers[0].state == "up"' >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf -o /dev/null "http://127.0.0.1:$P_IMPORT/1k" || { echo "no tunnel:"; cat "$dir/west.log"; exit 1; }

# A real client: one request every 100 ms for the whole flood.
python3 - "$P_IMPORT" "$((HOLD + 5))" >"$dir/client.out" <<'EOF' &
import socket, sys, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
ok = fail = 0
lat = []
end = time.time() + secs
while time.time() < end:
    t = time.time()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5,
                                     source_address=("127.0.0.2", 0))
        s.sendall(b"GET /1k HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
        s.close()
        if b" 200 " in data.split(b"\r\n", 1)[0] and len(data) > 1024:
            ok += 1
            lat.append(time.time() - t)
        else:
            fail += 1
    except OSError:
        fail += 1
    time.sleep(0.1)
lat.sort()
p99 = lat[int(len(lat) * 0.99) - 1] * 1000 if lat else 0
print(ok, fail, "%.1f" % p99)
EOF
client=$!

# The flood: FLOOD idle connections at once, held HOLD seconds; how many
# the gateway reset or closed, and when.
python3 - "$P_IMPORT" "$FLOOD" "$HOLD" "$SOURCES" >"$dir/flood.out" <<'EOF' &
import selectors, socket, sys, time
port, n, hold, sources = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
sel = selectors.DefaultSelector()
opened = failed = 0
start = time.time()
for i in range(n):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.bind(("127.0.0.%d" % (10 + i % sources), 0))
        s.connect_ex(("127.0.0.1", port))
        sel.register(s, selectors.EVENT_READ)
        opened += 1
    except OSError:
        failed += 1
        s.close()
closed_at = []
end = start + hold
while time.time() < end:
    for key, _ in sel.select(timeout=0.5):
        s = key.fileobj
        try:
            gone = s.recv(1) == b""
        except OSError:
            gone = True
        if gone:
            closed_at.append(time.time() - start)
            sel.unregister(s)
            s.close()
early = sum(1 for t in closed_at if t < 5)
late = len(closed_at) - early
print(opened, failed, early, late, "%.1f" % (closed_at[-1] if closed_at else 0))
EOF
flood=$!

peak=0 active_max=0
while kill -0 "$flood" 2>/dev/null; do
  use=$(cat "$group/memory.usage_in_bytes")
  [ "$use" -gt "$peak" ] && peak=$use
  a=$(curl -s "http://127.0.0.1:$P_AW/metrics" | awk '/^strait_streams_active\{.*side="import"/ {s += $2} END {print s + 0}')
  [ "${a%.*}" -gt "$active_max" ] && active_max=${a%.*}
  sleep 0.5
done
wait "$client" || true
read -r opened failed early late last <"$dir/flood.out"
read -r ok bad p99 <"$dir/client.out"
alive=no
kill -0 "$west" 2>/dev/null && alive=yes
ooms=$(awk '/oom_kill / {print $2}' "$group/memory.oom_control" 2>/dev/null || echo "?")
maxuse=$(cat "$group/memory.max_usage_in_bytes")
mib() { echo "scale=1; $1 / 1048576" | bc; }
echo
echo "importing gateway in a $LIMIT memory cgroup; $FLOOD idle connections at once from $SOURCES address(es), held ${HOLD} s; first_byte_timeout $FIRST_BYTE"
echo
echo "| measure | figure |"
echo "|---|---:|"
echo "| idle connections opened / failed to open | $opened / $failed |"
echo "| reset or closed by the gateway within 5 s (over max_per_client or max_concurrent) | $early |"
echo "| closed later (reclaimed for a new client, or first_byte_timeout) / last close at s | $late / $last |"
echo "| most streams active at the import (sampled) | $active_max |"
echo "| cgroup memory: peak sampled / max_usage_in_bytes, MiB | $(mib "$peak") / $(mib "$maxuse") |"
echo "| OOM kills in the cgroup / gateway alive at the end | $ooms / $alive |"
echo "| real client: requests served / failed, p99 ms | $ok / $bad, $p99 |"
