#!/usr/bin/env bash
# The fault runs behind RELIABILITY.md: for one broker, every fault that applies to it, with
# MESSAGES messages (default 100,000; the broker restart always RESTART_MESSAGES, default
# 100,000), printing one Markdown row per run (and the JSON outcomes into $OUT, default
# ./reliability-<broker>.jsonl). PATIENCE (seconds, default 120) and ONLY (run names) below.
#
#   eval "$(scripts/test services)"   # brokers, BUSWAY_TANSU_BIN
#   crates/busway-reliability/scripts/runs.sh memory|rabbitmq|kafka|servicebus
#
# Private brokers are started where a fault needs one (a tansu with sqlite storage to kill and
# restart, a tansu that advertises a proxy, the Service Bus emulator binary); the shared brokers
# are never restarted. Uses the release build of busway-reliability (and of busway-sb-emulator).
set -euo pipefail

BROKER=${1:?usage: runs.sh memory|rabbitmq|kafka|servicebus}
MESSAGES=${MESSAGES:-100000}
RESTART_MESSAGES=${RESTART_MESSAGES:-100000}
# Seconds without progress before a run gives up; the producer gets four times as long in all.
PATIENCE=${PATIENCE:-120}
# Only these runs (names as below, space-separated); all when empty.
ONLY=${ONLY:-}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$PWD/reliability-$BROKER.jsonl}
WORK=$(mktemp -d /tmp/busway-runs.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

(cd "$ROOT" && cargo build --release -q -p busway-reliability -p busway-sb-emulator)
BIN=$TARGET/release/busway-reliability
export RUST_LOG=${RUST_LOG:-error}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 150); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.2; done; echo "nothing listens on $1" >&2; return 1; }

# run NAME ARGS...: one fault run; its outcome is appended to $OUT and its row printed.
run() {
  local name=$1
  shift
  echo "== $BROKER: $name" >&2
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
  local messages=$MESSAGES
  [ "$name" = restart-broker ] && messages=$RESTART_MESSAGES
  "$BIN" run --messages "$messages" --patience "$PATIENCE" --workdir "$WORK/$name" "$@" |
    tee -a "$OUT" >/dev/null
}

# A tansu with sqlite storage in DIR on PORT advertising ADVERTISED (host:port); its pid in DIR/pid.
start_tansu() {
  local dir=$1 port=$2 advertised=$3
  mkdir -p "$dir"
  (cd "$dir" && exec setsid "${BUSWAY_TANSU_BIN:?run eval \"\$(scripts/test services)\" first}" broker \
    --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://$advertised" \
    --storage-engine sqlite://tansu.db </dev/null >>"$dir/tansu.log" 2>&1 & echo $! >"$dir/pid")
  wait_port "$port"
}

case "$BROKER" in
  restart-tansu)
    # Called by the restart-broker run: SIGKILL the private tansu, start it again on its data.
    dir=$2 port=$3
    kill -9 "$(cat "$dir/pid")"
    sleep 0.5
    start_tansu "$dir" "$port" "127.0.0.1:$port"
    exit 0
    ;;
  memory)
    export BUSWAY_BROKER=memory
    run panics --fault panics --panic-every 100
    ;;
  rabbitmq)
    export BUSWAY_BROKER=rabbitmq
    url=${BUSWAY_RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
    export BUSWAY_RABBITMQ__URL=$url
    run kill-consumer --fault kill-consumer --kills 10
    run panics --fault panics --panic-every 100
    port=$(free_port)
    BUSWAY_RABBITMQ__URL=${url/:5672/:$port} run cut-connections --fault cut-connections \
      --cuts 5 --proxy-listen "127.0.0.1:$port" --proxy-upstream 127.0.0.1:5672
    if [ -n "${BUSWAY_RABBITMQ_RESTART:-}" ]; then
      # A private node and the command that restarts it (see busway-rabbitmq's tests).
      BUSWAY_RABBITMQ__URL=${BUSWAY_RABBITMQ_PRIVATE_URL:?} run restart-broker \
        --fault restart-broker --restart-command "$BUSWAY_RABBITMQ_RESTART"
    fi
    ;;
  kafka)
    export BUSWAY_BROKER=kafka
    # tansu 0.6 skips the rest of a record batch when a fetch starts inside it (RELIABILITY.md):
    # producers write one record per batch.
    # A killed consumer stays in its group until its session times out (45 s by default), and
    # the group's partitions wait for it: a shorter session keeps the kill runs short.
    printf '[kafka.extra]\n"batch.num.messages" = "1"\n"session.timeout.ms" = "10000"\n"heartbeat.interval.ms" = "3000"\n' >"$WORK/kafka.toml"
    export BUSWAY_CONFIG=$WORK/kafka.toml
    export BUSWAY_KAFKA__BOOTSTRAP_SERVERS=${BUSWAY_KAFKA_BOOTSTRAP:-127.0.0.1:9092}
    # tansu 0.6 gives a group no working leader when a member joins while a killed one is still
    # in it (RELIABILITY.md): the replacement starts once the killed member's session is over.
    run kill-consumer --fault kill-consumer --kills 10 --replace-after 12
    run panics --fault panics --panic-every 100
    # Connections cut: a private tansu that advertises a proxy in front of it.
    upstream=$(free_port) proxy=$(free_port)
    start_tansu "$WORK/tansu-cut" "$upstream" "127.0.0.1:$proxy"
    PIDS+=("$(cat "$WORK/tansu-cut/pid")")
    BUSWAY_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:$proxy run cut-connections --fault cut-connections \
      --cuts 5 --proxy-listen "127.0.0.1:$proxy" --proxy-upstream "127.0.0.1:$upstream"
    # Broker restarted: a private tansu with sqlite storage, killed and started again.
    port=$(free_port)
    start_tansu "$WORK/tansu-restart" "$port" "127.0.0.1:$port"
    BUSWAY_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:$port run restart-broker --fault restart-broker \
      --restart-command "$0 restart-tansu $WORK/tansu-restart $port"
    PIDS+=("$(cat "$WORK/tansu-restart/pid")")
    ;;
  servicebus)
    export BUSWAY_BROKER=servicebus
    port=$(free_port)
    topic=reliability
    cat >"$WORK/Config.json" <<EOF
{"UserConfig":{"Namespaces":[{"Name":"sbemulatorns","Queues":[],"Topics":[{"Name":"$topic",
"Properties":{"DefaultMessageTimeToLive":"PT1H","DuplicateDetectionHistoryTimeWindow":"PT20S",
"RequiresDuplicateDetection":false},"Subscriptions":[{"Name":"reliability","Properties":{
"DeadLetteringOnMessageExpiration":false,"DefaultMessageTimeToLive":"PT1H","LockDuration":"PT30S",
"MaxDeliveryCount":100,"RequiresSession":false},"Rules":[]}]}]}],"Logging":{"Type":"Console"}}}
EOF
    key=$(head -c 32 /dev/urandom | base64)
    BUSWAY_SB_EMULATOR_KEY=$key setsid "$TARGET/release/busway-sb-emulator" --config "$WORK/Config.json" \
      --port "$port" </dev/null >"$WORK/emulator.log" 2>&1 &
    PIDS+=($!)
    wait_port "$port"
    conn() { printf 'Endpoint=sb://127.0.0.1:%s;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=%s;UseDevelopmentEmulator=true' "$1" "$key"; }
    export BUSWAY_SERVICEBUS__CONNECTION_STRING=$(conn "$port")
    run kill-consumer --fault kill-consumer --kills 10 --topic "$topic" --group reliability
    run panics --fault panics --panic-every 100 --topic "$topic" --group reliability
    proxy=$(free_port)
    BUSWAY_SERVICEBUS__CONNECTION_STRING=$(conn "$proxy") run cut-connections --fault cut-connections \
      --cuts 5 --proxy-listen "127.0.0.1:$proxy" --proxy-upstream "127.0.0.1:$port" --topic "$topic" --group reliability
    ;;
  *)
    echo "unknown broker $BROKER" >&2
    exit 2
    ;;
esac
