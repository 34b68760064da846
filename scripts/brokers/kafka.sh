# Kafka-protocol broker for busway-kafka's tests: tansu (pure Rust, from crates.io), on 127.0.0.1:9092.
#
# tansu is built once with `cargo install` into $BUSWAY_CACHE/tools (outside the clone; the first build
# takes ~9 minutes on 2 cores, later runs reuse the binary). The shared broker uses the sqlite storage
# engine so that data survives a broker restart (the conformance suite restarts it mid-stream).
# Python's confluent-kafka (a client nobody here wrote) and the official CloudEvents SDK for Python are
# installed into a venv for the interop test.

TANSU_VERSION=0.6.0

# tansu_bin: path of the cached tansu binary, building it first when missing.
tansu_bin() {
  local root=$BUSWAY_CACHE/tools bin=$BUSWAY_CACHE/tools/bin/tansu
  if [ ! -x "$bin" ] || ! "$bin" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    log "building tansu $TANSU_VERSION (first run only, ~9 minutes on 2 cores)"
    # Default features have no storage engine; the newest releases need a newer rustc than ours.
    # A separate target dir keeps the workspace's build cache untouched.
    CARGO_TARGET_DIR=$BUSWAY_CACHE/tansu-build cargo install tansu --version "$TANSU_VERSION" \
      --locked --features dynostore,libsql --root "$root" >&2
    rm -rf "$BUSWAY_CACHE/tansu-build"
  fi
  printf '%s\n' "$bin"
}

# confluent_kafka_python: a Python with confluent-kafka (it bundles its own librdkafka) and the
# CloudEvents SDK (its Kafka binding writes partitionkey as the record key), in a venv under
# $BUSWAY_CACHE, for busway-kafka's interop test.
confluent_kafka_python() {
  local venv=$BUSWAY_CACHE/venv-kafka
  if ! "$venv/bin/python" -c 'import confluent_kafka, cloudevents.v1.kafka' 2>/dev/null; then
    log "installing Python's confluent-kafka and cloudevents into $venv"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2 ||
      { apt_install python3-venv && python3 -m venv "$venv" >&2; }
    "$venv/bin/pip" install -q 'confluent-kafka==2.12.2' 'cloudevents==2.2.0' >&2
  fi
  printf '%s\n' "$venv/bin/python"
}

# provision_kafka: exports BUSWAY_KAFKA_BOOTSTRAP (an existing broker's, or tansu's on
# 127.0.0.1:9092, started when the port is closed), BUSWAY_TANSU_BIN (the restart test runs its own
# tansu) and BUSWAY_KAFKA_PYTHON.
provision_kafka() {
  export_var BUSWAY_KAFKA_PYTHON "$(confluent_kafka_python)"
  local bin
  bin=$(tansu_bin)
  export_var BUSWAY_TANSU_BIN "$bin"
  if [ -n "${BUSWAY_KAFKA_BOOTSTRAP:-}" ]; then
    export_var BUSWAY_KAFKA_BOOTSTRAP "$BUSWAY_KAFKA_BOOTSTRAP"
    return
  fi
  if ! port_open 127.0.0.1 9092; then
    local data=$BUSWAY_CACHE/tansu-data
    mkdir -p "$data"
    log "starting tansu on 127.0.0.1:9092"
    # In-memory storage: fast, and fresh on every start. The restart test brings its own
    # sqlite-backed tansu, so this one is never restarted under the other tests.
    (cd "$data" && exec setsid "$bin" broker \
      --listener-url tcp://127.0.0.1:9092 \
      --advertised-listener-url tcp://127.0.0.1:9092 \
      --storage-engine memory://tansu/ \
      </dev/null >"$data/tansu.log" 2>&1 &)
    wait_port 127.0.0.1 9092 60 tansu
  fi
  export_var BUSWAY_KAFKA_BOOTSTRAP 127.0.0.1:9092
}
