#!/usr/bin/env bash
# The comparison table of benches/README.md in one command: Tern, Mosquitto and rumqttd, each
# started fresh on its own loopback port for every run, driven by the same tern-bench rows, one
# broker at a time (the machine's cores are shared by the broker and the load). Installs
# Mosquitto (apt) and rumqttd 0.20.0 (cargo, into target/peers) when missing.
#
#   ./scripts/compare-brokers.sh              # 3 runs of 10 s per cell, medians
#   RUNS=1 SECONDS_PER_RUN=5 ./scripts/compare-brokers.sh   # a quick look
#
# The table is printed and written into benches/README.md between its markers.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
# Idle connections need two descriptors each on one machine (the broker's and the bench's).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "== installing mosquitto" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto >/dev/null
  $sudo systemctl disable --now mosquitto >/dev/null 2>&1 || $sudo service mosquitto stop >/dev/null 2>&1 || true
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
RUMQTTD=$(command -v rumqttd || echo target/peers/bin/rumqttd)
if [ ! -x "$RUMQTTD" ]; then
  echo "== installing rumqttd 0.20.0 into target/peers" >&2
  # Not --locked: its lock file pins metrics 0.22.1, which today's compiler refuses.
  cargo install rumqttd --version 0.20.0 --root target/peers >&2
  RUMQTTD=target/peers/bin/rumqttd
fi
echo "== building tern and tern-bench (release)" >&2
cargo build --release -q -p tern -p tern-bench
TERN=target/release/tern
BENCH=target/release/tern-bench

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=18900

# Each broker tuned for throughput as its documentation suggests, with no persistence.
# Mosquitto's queue is unlimited: with max_queued_messages 10000, 2.0.11 logs "Outgoing
# messages are being dropped" and drops acknowledged QoS 1/2 fan-in messages although the
# bench keeps at most publishers x window (800) outstanding.
cat >"$work/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 100
max_queued_messages 0
set_tcp_nodelay true
EOF
# Tern's default in-flight window is 32 (as EMQX's; Mosquitto's is 20): the peers get 100 here,
# so Tern does too (at 32 its QoS 2 fan-in is bounded by the subscriber's round trips, not by
# the broker's work).
cat >"$work/tern.toml" <<EOF
[limits]
inflight_count_max = 100
EOF
cat >"$work/rumqttd.toml" <<EOF
id = 0
[router]
id = 0
max_connections = 20010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:$port"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 1048576
    max_inflight_count = 100
    dynamic_filters = true
EOF

start() {
  # A broker left over from an earlier run must not answer for this one.
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "error: something already listens on 127.0.0.1:$port" >&2
    exit 1
  fi
  case $1 in
    tern) RUST_LOG=warn "$TERN" --config "$work/tern.toml" --listen "127.0.0.1:$port" --in-memory >"$work/broker.log" 2>&1 & ;;
    mosquitto) "$MOSQUITTO" -c "$work/mosquitto.conf" >"$work/broker.log" 2>&1 & ;;
    rumqttd) "$RUMQTTD" --config "$work/rumqttd.toml" >"$work/broker.log" 2>&1 & ;;
  esac
  pid=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && kill -0 "$pid" 2>/dev/null; then
      return
    fi
    sleep 0.1
  done
  echo "error: $1 did not listen on $port" >&2
  cat "$work/broker.log" >&2
  exit 1
}

stop() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# One cell: the median over $RUNS runs of what `pick` extracts from tern-bench's report.
cell() {
  local broker=$1 pick=$2; shift 2
  local values=()
  for _ in $(seq "$RUNS"); do
    start "$broker"
    local out
    if out=$("$BENCH" --broker "127.0.0.1:$port" --seconds "$SECONDS_PER_RUN" --broker-pid "$pid" "$@" 2>&1); then
      values+=("$(echo "$out" | $pick)")
    else
      values+=("FAILED")
      echo "$broker $*: $out" >&2
    fi
    stop
  done
  # A run that failed its verification (or did not finish) fails the cell: no median hides it.
  local failed
  failed=$(printf '%s\n' "${values[@]}" | grep -c FAILED || true)
  if [ "$failed" -gt 0 ]; then
    echo "FAILED ($failed of $RUNS)"
    return
  fi
  printf '%s\n' "${values[@]}" | sort -n | awk '{v[NR]=$0} END {print v[int((NR+1)/2)]}'
}

throughput() { awk '/^throughput/ {print $2}'; }
p99() { awk '/^latency/ {for (i=1;i<=NF;i++) if ($i=="p99") print $(i+1)}'; }
p50() { awk '/^latency/ {print $3}'; }
per_connection() { awk '/^broker memory/ {print $3}'; }

rows=(
  "QoS 0 fan-in, 8 publishers (msg/s)|throughput|--qos 0 fan-in --publishers 8"
  "QoS 1 fan-in, 8 publishers (msg/s)|throughput|--qos 1 fan-in --publishers 8"
  "QoS 2 fan-in, 8 publishers (msg/s)|throughput|--qos 2 fan-in --publishers 8"
  "QoS 1 point-to-point, 8 pairs (msg/s)|throughput|--qos 1 p2p --pairs 8"
  "QoS 1 fan-out, 8 subscribers (msg/s)|throughput|--qos 1 fan-out --subscribers 8"
  "QoS 1 at a fixed 20,000 msg/s: p50 (µs)|p50|--qos 1 --rate 20000 fan-in --publishers 8"
  "QoS 1 at a fixed 20,000 msg/s: p99 (µs)|p99|--qos 1 --rate 20000 fan-in --publishers 8"
  "$IDLE_CONNECTIONS idle connections: broker bytes per connection|per_connection|idle --connections $IDLE_CONNECTIONS"
)

table="| row (64-byte payloads, window 100) | Tern | Mosquitto 2.0 | rumqttd 0.20 | Tern / rumqttd | Tern / Mosquitto |
| --- | --- | --- | --- | --- | --- |"
for row in "${rows[@]}"; do
  IFS='|' read -r name pick args <<<"$row"
  echo "== $name" >&2
  # shellcheck disable=SC2086
  t=$(cell tern "$pick" $args); m=$(cell mosquitto "$pick" $args); r=$(cell rumqttd "$pick" $args)
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a+0 > 0 && b+0 > 0) printf "%.2f", a/b; else print "-" }'; }
  table+=$'\n'"| $name | $t | $m | $r | $(ratio "$t" "$r") | $(ratio "$t" "$m") |"
done
stamp="Measured $(date -u +%Y-%m-%d) on $(nproc) cores, $RUNS runs of ${SECONDS_PER_RUN} s per cell (medians), \`./scripts/compare-brokers.sh\`."
echo "$table"
echo "$stamp"

readme=benches/README.md
begin='<!-- compare-brokers:begin -->'
end='<!-- compare-brokers:end -->'
# Both markers or nothing: a missing end marker must not swallow the rest of the file.
if grep -qxF "$begin" "$readme" 2>/dev/null && grep -qxF "$end" "$readme"; then
  TABLE="$table"$'\n\n'"$stamp" awk -v b="$begin" -v e="$end" '
    $0 == b { print; print ENVIRON["TABLE"]; skip = 1; next }
    $0 == e { skip = 0 }
    !skip { print }' "$readme" >"$work/readme" && cp "$work/readme" "$readme"
  echo "== written into $readme" >&2
fi
