# Confluent-compatible schema registry for busway-schema's tests: rivven-schema (pure Rust, from
# crates.io), on 127.0.0.1:8081, keeping schemas in memory (fresh on every start).
#
# Why this one: Confluent's own registry and Karapace (Aiven's, Apache-licensed) ship only as
# Docker images or from Maven/GitHub, none reachable here (Karapace is not on PyPI). rivven-schema
# implements the Confluent REST API (subjects, versions, ids, config, compatibility, the error
# codes) without needing a Kafka broker. Where it differs from Confluent's registry is listed in
# crates/busway-schema/tests/registry_confluent.rs.
#
# It is built once with `cargo install` into $BUSWAY_CACHE/tools (outside the clone; the first
# build takes ~3 minutes on 2 idle cores, later runs reuse the binary). Python's confluent-kafka with
# its Avro and Protobuf serializers (a client nobody here wrote) goes into a venv for the
# wire-format interop tests.

RIVVEN_SCHEMA_VERSION=0.0.22
SCHEMA_REGISTRY_CONFLUENT_KAFKA_VERSION=2.12.2

# rivven_schema_bin: path of the cached rivven-schema binary, building it first when missing.
rivven_schema_bin() {
  local root=$BUSWAY_CACHE/tools bin=$BUSWAY_CACHE/tools/bin/rivven-schema
  if [ ! -x "$bin" ] || ! "$bin" --version 2>/dev/null | grep -q "$RIVVEN_SCHEMA_VERSION"; then
    log "building rivven-schema $RIVVEN_SCHEMA_VERSION (first run only, ~3 minutes on 2 cores)"
    # A separate target dir keeps the workspace's build cache untouched.
    CARGO_TARGET_DIR=$BUSWAY_CACHE/rivven-schema-build cargo install rivven-schema \
      --version "$RIVVEN_SCHEMA_VERSION" --locked --root "$root" >&2
    rm -rf "$BUSWAY_CACHE/rivven-schema-build"
  fi
  printf '%s\n' "$bin"
}

# schema_registry_python: a Python with confluent-kafka's schema-registry serializers, in a venv
# under $BUSWAY_CACHE.
schema_registry_python() {
  local venv=$BUSWAY_CACHE/venv-schema-registry
  if ! "$venv/bin/python" -c "
import sys, confluent_kafka, fastavro, google.protobuf
sys.exit(confluent_kafka.__version__ != '$SCHEMA_REGISTRY_CONFLUENT_KAFKA_VERSION')" 2>/dev/null; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" 2>/dev/null; then
      apt_install python3-venv
    fi
    log "installing confluent-kafka $SCHEMA_REGISTRY_CONFLUENT_KAFKA_VERSION (avro, protobuf) into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet \
      "confluent-kafka[avro,protobuf,schemaregistry]==$SCHEMA_REGISTRY_CONFLUENT_KAFKA_VERSION" >&2
  fi
  printf '%s\n' "$venv/bin/python"
}

# provision_schema_registry: exports BUSWAY_SCHEMA_REGISTRY_URL (an existing registry's, or
# rivven-schema's on 127.0.0.1:8081, started when the port is closed) and
# BUSWAY_SCHEMA_REGISTRY_PYTHON.
provision_schema_registry() {
  export_var BUSWAY_SCHEMA_REGISTRY_PYTHON "$(schema_registry_python)"
  if [ -n "${BUSWAY_SCHEMA_REGISTRY_URL:-}" ]; then
    export_var BUSWAY_SCHEMA_REGISTRY_URL "$BUSWAY_SCHEMA_REGISTRY_URL"
    return
  fi
  if ! port_open 127.0.0.1 8081; then
    local bin data=$BUSWAY_CACHE/schema-registry
    bin=$(rivven_schema_bin)
    mkdir -p "$data"
    log "starting rivven-schema on 127.0.0.1:8081"
    (cd "$data" && exec setsid "$bin" serve --host 127.0.0.1 --port 8081 \
      </dev/null >"$data/rivven-schema.log" 2>&1 &)
    wait_port 127.0.0.1 8081 60 rivven-schema
  fi
  export_var BUSWAY_SCHEMA_REGISTRY_URL http://127.0.0.1:8081
}
