#!/usr/bin/env bash
# The tools users have, through strait, through a stunnel pair and through
# an HAProxy pair (multi-threaded), all with the same certificates and
# mutual TLS, in one run: iperf3 (1 stream and 16 streams, 10 s each), ab
# (new connection per request, 1 KiB from nginx, 32 at a time), CPU seconds
# per GiB of both tunnel ends, the ratios strait / stunnel and strait /
# HAProxy, and how strait's CPU split over its threads during 16 streams.
#
#   apt-get install iperf3 stunnel4 haproxy apache2-utils nginx-light jq bc
#   cargo build --release -p strait && bash bench/outside-tools.sh
#
# STRAIT_ARGS adds arguments to `strait gateway run` (e.g.
# "--worker-threads 1"); TUNNEL adds a line to both gateways' [tunnel]
# section (e.g. "connections_per_peer = 1").
#
# Everything listens on 127.0.0.1 (ports 25000-25030) and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/pair.sh
STRAIT=${STRAIT:-target/release/strait}
SECS=${SECS:-10}
REQUESTS=${REQUESTS:-20000}
STRAIT_ARGS=${STRAIT_ARGS:-}
TUNNEL=${TUNNEL:-}
for tool in iperf3 stunnel4 haproxy ab nginx jq bc; do
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
P_HI_C=25020 P_HI_S=25021 P_HW_C=25022 P_HW_S=25023

strait_pki

# Targets. One iperf3 server for every run: strait's target check connects
# to it every second, which a one-off server (-1) would take as its client.
iperf3 -s -p $P_IPERF >/dev/null 2>&1 &
pids+=($!)
nginx_1k $P_NGINX
pids+=($!)

# The strait pair: east exports both targets, west imports them.
{ gateway_head e us-east "127.0.0.1:$P_SQ_E" "127.0.0.1:$P_SA_E"; cat <<EOF; } >"$dir/east.toml"
[tunnel]
$TUNNEL
[[export]]
service = "iperf"
target = "127.0.0.1:$P_IPERF"
[[export]]
service = "web"
target = "127.0.0.1:$P_NGINX"
EOF
{ gateway_head w eu-west "127.0.0.1:$P_SQ_W" "127.0.0.1:$P_SA_W"; cat <<EOF; } >"$dir/west.toml"
[tunnel]
$TUNNEL
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
# shellcheck disable=SC2086
RUST_LOG=warn "$STRAIT" gateway run --config "$dir/east.toml" $STRAIT_ARGS 2>"$dir/east.log" &
east=$!
pids+=($east)
# shellcheck disable=SC2086
RUST_LOG=warn "$STRAIT" gateway run --config "$dir/west.toml" $STRAIT_ARGS 2>"$dir/west.log" &
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

# The HAProxy pair: same certificates, mutual TLS 1.3, one TLS connection
# per client connection, one thread per core (its default).
for who in w e; do cat "$dir/$who/cert.pem" "$dir/$who/key.pem" >"$dir/$who/haproxy.pem"; done
haproxy_conf() { # file: frontends and backends follow on stdin
  { cat <<EOF
global
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
EOF
    cat; } >"$1"
}
tls_w="ssl crt $dir/w/haproxy.pem ca-file $dir/w/bundle.pem verify required ssl-min-ver TLSv1.3"
tls_e="ssl crt $dir/e/haproxy.pem ca-file $dir/e/bundle.pem verify required ssl-min-ver TLSv1.3"
haproxy_conf "$dir/haproxy-client.cfg" <<EOF
listen iperf
  bind 127.0.0.1:$P_HI_C
  server s 127.0.0.1:$P_HI_S $tls_w
listen web
  bind 127.0.0.1:$P_HW_C
  server s 127.0.0.1:$P_HW_S $tls_w
EOF
haproxy_conf "$dir/haproxy-server.cfg" <<EOF
listen iperf
  bind 127.0.0.1:$P_HI_S $tls_e
  server t 127.0.0.1:$P_IPERF
listen web
  bind 127.0.0.1:$P_HW_S $tls_e
  server t 127.0.0.1:$P_NGINX
EOF
haproxy -db -f "$dir/haproxy-client.cfg" 2>"$dir/haproxy-client.log" &
h_client=$!
pids+=($h_client)
haproxy -db -f "$dir/haproxy-server.cfg" 2>"$dir/haproxy-server.log" &
h_server=$!
pids+=($h_server)

for _ in $(seq 1 100); do
  if curl -s "http://127.0.0.1:$P_SA_W/status" | jq -e '.peers[0].state == "up"' >/dev/null 2>&1 &&
     curl -sf -o /dev/null "http://127.0.0.1:$P_NGINX/1k"; then
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

threads() { # a pid's threads: "name/tid:ticks ..."
  local out=""
  for t in /proc/"$1"/task/*; do
    out+="$(tr -d ' ' <"$t/comm")/${t##*/}:$(awk '{print $14 + $15}' "$t/stat") "
  done
  echo "$out"
}

split() { # before after -> each thread's CPU over the run, as % of one core
  awk -v hz="$(getconf CLK_TCK)" -v secs="$SECS" '
    NR == 1 { for (i = 1; i <= NF; i++) { split($i, a, ":"); b[a[1]] = a[2] } }
    NR == 2 { for (i = 1; i <= NF; i++) { split($i, a, ":"); d = a[2] - b[a[1]];
              if (100 * d / hz / secs >= 1) printf "%s %.0f%%  ", a[1], 100 * d / hz / secs } }' <<<"$1
$2"
}

iperf_run() { # streams port pids... -> "Gbit/s cpu_s_per_GiB"
  local streams=$1 port=$2; shift 2
  local before after json
  before=$(cpu "$@" 2>/dev/null || echo 0)
  json=$(iperf3 -c 127.0.0.1 -p "$port" -P "$streams" -t "$SECS" -J || true)
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
  out=$(ab -q -n "$REQUESTS" -c 32 -e "$dir/ab.csv" "http://127.0.0.1:$1/1k" 2>&1)
  local rps p99 failed
  rps=$(awk '/Requests per second/ {print $4}' <<<"$out")
  # ab's own table rounds to whole milliseconds; its CSV keeps three
  # decimals.
  p99=$(awk -F, '$1 == "99" {printf "%.1f", $2}' "$dir/ab.csv")
  # A non-2xx answer is a failure too (ab counts it apart).
  failed=$(awk '/Failed requests/ {f = $3} /Non-2xx responses/ {n = $3} END {print f + n}' <<<"$out")
  echo "${rps:-0} ${p99:--} ${failed:--}"
}

read -r d_gbit _ <<<"$(iperf_run 1 $P_IPERF)"
read -r s_gbit s_cpu <<<"$(iperf_run 1 $P_SI "$west" "$east")"
read -r t_gbit t_cpu <<<"$(iperf_run 1 $P_TI_C "${ti_pids[@]}")"
read -r h_gbit h_cpu <<<"$(iperf_run 1 $P_HI_C "$h_client" "$h_server")"
read -r d16_gbit _ <<<"$(iperf_run 16 $P_IPERF)"
w_before=$(threads "$west"); e_before=$(threads "$east")
read -r s16_gbit s16_cpu <<<"$(iperf_run 16 $P_SI "$west" "$east")"
w_after=$(threads "$west"); e_after=$(threads "$east")
read -r t16_gbit t16_cpu <<<"$(iperf_run 16 $P_TI_C "${ti_pids[@]}")"
read -r h16_gbit h16_cpu <<<"$(iperf_run 16 $P_HI_C "$h_client" "$h_server")"
read -r d_rps d_p99 d_fail <<<"$(ab_run $P_NGINX)"
read -r s_rps s_p99 s_fail <<<"$(ab_run $P_SW)"
read -r t_rps t_p99 t_fail <<<"$(ab_run $P_TW_C)"
read -r h_rps h_p99 h_fail <<<"$(ab_run $P_HW_C)"

ratio() { echo "scale=2; $1 / $2" | bc 2>/dev/null || echo "-"; }
row() { # measure direct strait stunnel haproxy
  echo "| $1 | $2 | $3 | $4 | $5 | $(ratio "$3" "$4") | $(ratio "$3" "$5") |"
}
echo
echo "strait: ${STRAIT_ARGS:-default runtime}; [tunnel] ${TUNNEL:-defaults}; $(nproc) cores"
echo
echo "| measure | direct | strait | stunnel | HAProxy | strait / stunnel | strait / HAProxy |"
echo "|---|---:|---:|---:|---:|---:|---:|"
row "iperf3, 1 stream, ${SECS} s, Gbit/s" "$d_gbit" "$s_gbit" "$t_gbit" "$h_gbit"
row "CPU seconds per GiB, 1 stream, both ends" - "$s_cpu" "$t_cpu" "$h_cpu"
row "iperf3, 16 streams, ${SECS} s, Gbit/s" "$d16_gbit" "$s16_gbit" "$t16_gbit" "$h16_gbit"
row "CPU seconds per GiB, 16 streams, both ends" - "$s16_cpu" "$t16_cpu" "$h16_cpu"
row "ab -c 32, new connection per request, 1 KiB, requests/s" "$d_rps" "$s_rps" "$t_rps" "$h_rps"
echo "| ab p99 ms | $d_p99 | $s_p99 | $t_p99 | $h_p99 | | |"
echo "| ab failed requests (of $REQUESTS) | $d_fail | $s_fail | $t_fail | $h_fail | | |"
echo
echo "strait's threads during 16 streams (CPU over the run, % of one core; 1% and more):"
echo "  west (import): $(split "$w_before" "$w_after")"
echo "  east (export): $(split "$e_before" "$e_after")"
