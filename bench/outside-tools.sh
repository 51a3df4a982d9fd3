#!/usr/bin/env bash
# The tools users have, through strait and through a stunnel pair with the
# same certificates, in one run: iperf3 (1 stream, 10 s), ab (new connection
# per request, 1 KiB from nginx, 32 at a time), CPU seconds per GiB of both
# tunnel ends, and the ratios strait / stunnel.
#
#   apt-get install iperf3 stunnel4 apache2-utils nginx-light
#   cargo build --release -p strait && bash bench/outside-tools.sh
#
# Everything listens on 127.0.0.1 (ports 25000-25020) and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
STRAIT=${STRAIT:-target/release/strait}
SECS=${SECS:-10}
REQUESTS=${REQUESTS:-20000}
for tool in iperf3 stunnel4 ab nginx jq; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (see the header of $0)" >&2; exit 2; }
done
[ -x "$STRAIT" ] || { echo "build it first: cargo build --release -p strait" >&2; exit 2; }

dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${DEBUG:-}" ]; then echo "kept $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT

P_IPERF=25000 P_NGINX=25001
P_SQ_E=25002 P_SQ_W=25003 P_SA_E=25004 P_SA_W=25005 P_SI=25006 P_SW=25007
P_TI_C=25010 P_TI_S=25011 P_TW_C=25012 P_TW_S=25013

"$STRAIT" ca init --trust-domain example.org --dir "$dir/ca" >/dev/null
"$STRAIT" cert issue --ca "$dir/ca" --gateway --region eu-west --name gw-w --out "$dir/w" >/dev/null
"$STRAIT" cert issue --ca "$dir/ca" --gateway --region us-east --name gw-e --out "$dir/e" >/dev/null

# Targets. One iperf3 server for every run: strait's target check connects
# to it every second, which a one-off server (-1) would take as its client.
iperf3 -s -p $P_IPERF >/dev/null 2>&1 &
pids+=($!)
mkdir -p "$dir/www"
head -c 1024 /dev/urandom >"$dir/www/1k"
cat >"$dir/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:$P_NGINX; root $dir/www; }
}
EOF
nginx -c "$dir/nginx.conf" &
pids+=($!)

# The strait pair: east exports both targets, west imports them.
cat >"$dir/east.toml" <<EOF
[gateway]
region = "us-east"
listen = "127.0.0.1:$P_SQ_E"
admin = "127.0.0.1:$P_SA_E"
[identity]
cert = "e/cert.pem"
key = "e/key.pem"
bundle = "e/bundle.pem"
[[export]]
service = "iperf"
target = "127.0.0.1:$P_IPERF"
[[export]]
service = "web"
target = "127.0.0.1:$P_NGINX"
EOF
cat >"$dir/west.toml" <<EOF
[gateway]
region = "eu-west"
listen = "127.0.0.1:$P_SQ_W"
admin = "127.0.0.1:$P_SA_W"
[identity]
cert = "w/cert.pem"
key = "w/key.pem"
bundle = "w/bundle.pem"
[[peer]]
region = "us-east"
addresses = ["127.0.0.1:$P_SQ_E"]
[[import]]
service = "iperf"
listen = "127.0.0.1:$P_SI"
[[import]]
service = "web"
listen = "127.0.0.1:$P_SW"
EOF
RUST_LOG=warn "$STRAIT" gateway run --config "$dir/east.toml" 2>"$dir/east.log" &
east=$!
pids+=($east)
RUST_LOG=warn "$STRAIT" gateway run --config "$dir/west.toml" 2>"$dir/west.log" &
west=$!
pids+=($west)

# The stunnel pair: same certificates, mutual TLS 1.3, one TLS connection
# per client connection.
stunnel_conf() { # name cert-dir client(yes|no) accept connect
  cat >"$dir/$1.conf" <<EOF
foreground = yes
pid =
debug = 3
[svc]
client = $3
accept = 127.0.0.1:$4
connect = 127.0.0.1:$5
cert = $dir/$2/cert.pem
key = $dir/$2/key.pem
CAfile = $dir/$2/bundle.pem
verifyChain = yes
sslVersion = TLSv1.3
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
EOF
}
stunnel_conf ti-client w yes $P_TI_C $P_TI_S
stunnel_conf ti-server e no $P_TI_S $P_IPERF
stunnel_conf tw-client w yes $P_TW_C $P_TW_S
stunnel_conf tw-server e no $P_TW_S $P_NGINX
for c in ti-client ti-server; do
  stunnel4 "$dir/$c.conf" 2>"$dir/$c.log" &
  pids+=($!)
done
ti_pids=("${pids[@]: -2}")
for c in tw-client tw-server; do
  stunnel4 "$dir/$c.conf" 2>"$dir/$c.log" &
  pids+=($!)
done

for _ in $(seq 1 100); do
  if curl -s "http://127.0.0.1:$P_SA_W/status" | jq -e '.peers[0].state == "up"' >/dev/null 2>&1 &&
     curl -s -o /dev/null "http://127.0.0.1:$P_NGINX/1k"; then
    break
  fi
  sleep 0.1
done
curl -s "http://127.0.0.1:$P_SA_W/status" | jq -e '.peers[0].state == "up"' >/dev/null ||
  { echo "the strait tunnel did not come up:"; cat "$dir/west.log" "$dir/east.log"; exit 1; }

cpu() { # summed utime+stime, in seconds, of the given pids
  local t=0
  for p in "$@"; do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "scale=3; $t / $(getconf CLK_TCK)" | bc
}

iperf_run() { # port pids... -> "Gbit/s cpu_s_per_GiB"
  local port=$1; shift
  local before after json
  before=$(cpu "$@" 2>/dev/null || echo 0)
  json=$(iperf3 -c 127.0.0.1 -p "$port" -t "$SECS" -J || true)
  if [ -n "${DEBUG:-}" ]; then jq -c '.error // empty' <<<"$json" >&2; fi
  after=$(cpu "$@" 2>/dev/null || echo 0)
  local bps bytes
  bps=$(jq '.end.sum_received.bits_per_second' <<<"$json")
  bytes=$(jq '.end.sum_received.bytes' <<<"$json")
  local gbit per_gib
  gbit=$(echo "scale=2; $bps / 1000000000" | bc)
  if [ $# -gt 0 ]; then
    per_gib=$(echo "scale=2; ($after - $before) * 1073741824 / $bytes" | bc)
  else
    per_gib="-"
  fi
  echo "$gbit $per_gib"
}

ab_run() { # port -> "req/s p99_ms failed"
  local out
  out=$(ab -q -n "$REQUESTS" -c 32 "http://127.0.0.1:$1/1k" 2>&1)
  local rps p99 failed
  rps=$(awk '/Requests per second/ {print $4}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  failed=$(awk '/Failed requests/ {print $3}' <<<"$out")
  echo "${rps:-0} ${p99:--} ${failed:--}"
}

read -r d_gbit _ <<<"$(iperf_run $P_IPERF)"
read -r s_gbit s_cpu <<<"$(iperf_run $P_SI "$west" "$east")"
read -r t_gbit t_cpu <<<"$(iperf_run $P_TI_C "${ti_pids[@]}")"
read -r d_rps d_p99 d_fail <<<"$(ab_run $P_NGINX)"
read -r s_rps s_p99 s_fail <<<"$(ab_run $P_SW)"
read -r t_rps t_p99 t_fail <<<"$(ab_run $P_TW_C)"

ratio() { echo "scale=2; $1 / $2" | bc; }
echo
echo "| measure | direct | strait | stunnel | strait / stunnel |"
echo "|---|---:|---:|---:|---:|"
echo "| iperf3, 1 stream, ${SECS} s, Gbit/s | $d_gbit | $s_gbit | $t_gbit | $(ratio "$s_gbit" "$t_gbit") |"
echo "| CPU seconds per GiB, both tunnel ends | - | $s_cpu | $t_cpu | $(ratio "$s_cpu" "$t_cpu") |"
echo "| ab -c 32, new connection per request, 1 KiB, requests/s | $d_rps | $s_rps | $t_rps | $(ratio "$s_rps" "$t_rps") |"
echo "| ab p99 ms | $d_p99 | $s_p99 | $t_p99 | |"
echo "| ab failed requests (of $REQUESTS) | $d_fail | $s_fail | $t_fail | |"
