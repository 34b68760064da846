# RabbitMQ from Debian's rabbitmq-server, on 127.0.0.1:5672 (guest/guest).
#
# Python's pika (an AMQP client nobody here wrote) is installed into a venv under $BUSWAY_CACHE for
# busway-rabbitmq's interop test, which finds the interpreter in BUSWAY_RABBITMQ_PYTHON.
#
# A second, private node (busway-restart@localhost on 127.0.0.1:5682) is the one tests restart:
# busway-rabbitmq's broker_restart test and busway-reliability's runs.sh read
# BUSWAY_RABBITMQ_PRIVATE_URL and BUSWAY_RABBITMQ_RESTART, so the shared node never goes down under
# the other tests.

PIKA_VERSION=1.3.2

provision_rabbitmq() {
  if [ -n "${BUSWAY_RABBITMQ_URL:-}" ]; then
    export_var BUSWAY_RABBITMQ_URL "$BUSWAY_RABBITMQ_URL"
  else
    if ! port_open 127.0.0.1 5672; then
      command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
      log "starting RabbitMQ"
      rabbitmq-server -detached
      wait_port 127.0.0.1 5672 90 RabbitMQ
      # The port opens before the broker accepts logins; wait for the app to be running.
      rabbitmqctl await_startup --timeout 90 >/dev/null
    fi
    # Tests name their queues `bw-…` (unique per run): let the local broker delete them after an
    # hour unused, so repeated runs do not pile up thousands of queues.
    rabbitmqctl set_policy --apply-to queues busway-test-queues '^bw-' '{"expires":3600000}' >/dev/null
    export_var BUSWAY_RABBITMQ_URL "amqp://guest:guest@127.0.0.1:5672/%2f"
  fi
  provision_pika
}

RABBITMQ_PRIVATE_NODE=busway-restart@localhost
RABBITMQ_PRIVATE_PORT=5682
RABBITMQ_PRIVATE_DIST_PORT=25682

# provision_rabbitmq_private: starts (or reuses) the private node and exports
# BUSWAY_RABBITMQ_PRIVATE_URL and BUSWAY_RABBITMQ_RESTART, a command that restarts its application
# (`stop_app` then `start_app`: durable queues and persistent messages survive, connections drop).
# Both honoured when already set, e.g. to point at a node of one's own.
provision_rabbitmq_private() {
  if [ -n "${BUSWAY_RABBITMQ_PRIVATE_URL:-}" ] && [ -n "${BUSWAY_RABBITMQ_RESTART:-}" ]; then
    export_var BUSWAY_RABBITMQ_PRIVATE_URL "$BUSWAY_RABBITMQ_PRIVATE_URL"
    export_var BUSWAY_RABBITMQ_RESTART "$BUSWAY_RABBITMQ_RESTART"
    return
  fi
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  local node=$RABBITMQ_PRIVATE_NODE port=$RABBITMQ_PRIVATE_PORT
  # Its own data, logs, configuration and plugin list: nothing of the shared node's setup (its
  # listener on 5672 in /etc/rabbitmq/rabbitmq.conf, its plugins, management's port) applies. In a
  # temporary directory, since Debian's scripts run the node as the `rabbitmq` user, who cannot
  # enter root's home; it shares that user's Erlang cookie with rabbitmqctl, like the shared node.
  local base=${TMPDIR:-/tmp}/busway-rabbitmq-private-$(id -u)
  if rabbitmqctl -n "$node" -q -t 10 eval 'ok.' >/dev/null 2>&1; then
    # Running: bring its application back in case a test stopped it and never restarted it
    # (a no-op when it runs).
    rabbitmqctl -n "$node" start_app >/dev/null
  else
    log "starting the private RabbitMQ node $node on 127.0.0.1:$port"
    mkdir -p "$base/mnesia" "$base/log"
    echo '[].' >"$base/enabled_plugins"
    printf 'listeners.tcp.local = 127.0.0.1:%s\n' "$port" >"$base/rabbitmq.conf"
    if [ "$(id -u)" -eq 0 ] && id rabbitmq >/dev/null 2>&1; then
      chown -R rabbitmq:rabbitmq "$base"
    fi
    (cd / && RABBITMQ_NODENAME=$node \
      RABBITMQ_NODE_PORT=$port \
      RABBITMQ_DIST_PORT=$RABBITMQ_PRIVATE_DIST_PORT \
      RABBITMQ_MNESIA_BASE=$base/mnesia \
      RABBITMQ_LOG_BASE=$base/log \
      RABBITMQ_PID_FILE=$base/pid \
      RABBITMQ_ENABLED_PLUGINS_FILE=$base/enabled_plugins \
      RABBITMQ_CONFIG_FILE=$base/rabbitmq.conf \
      RABBITMQ_ADVANCED_CONFIG_FILE=$base/advanced.config \
      rabbitmq-server -detached)
    wait_port 127.0.0.1 "$port" 90 "the private RabbitMQ node"
  fi
  rabbitmqctl -n "$node" await_startup --timeout 90 >/dev/null
  rabbitmqctl -n "$node" set_policy --apply-to queues busway-test-queues '^bw-' '{"expires":3600000}' >/dev/null
  export_var BUSWAY_RABBITMQ_PRIVATE_URL "amqp://guest:guest@127.0.0.1:$port/%2f"
  export_var BUSWAY_RABBITMQ_RESTART "rabbitmqctl -n $node stop_app && rabbitmqctl -n $node start_app"
}

# provision_pika: a venv with pika, reused across runs; exports BUSWAY_RABBITMQ_PYTHON.
provision_pika() {
  local venv=$BUSWAY_CACHE/venv-pika
  if ! "$venv/bin/python" -c "import pika, sys; sys.exit(pika.__version__ != '$PIKA_VERSION')" 2>/dev/null; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" 2>/dev/null; then
      apt_install python3-venv
    fi
    log "installing pika $PIKA_VERSION into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet "pika==$PIKA_VERSION" >&2
  fi
  export_var BUSWAY_RABBITMQ_PYTHON "$venv/bin/python"
}
