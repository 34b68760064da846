# RabbitMQ from Debian's rabbitmq-server, on 127.0.0.1:5672 (guest/guest).
#
# Python's pika (an AMQP client nobody here wrote) is installed into a venv under $BUSWAY_CACHE for
# busway-rabbitmq's interop test, which finds the interpreter in BUSWAY_RABBITMQ_PYTHON.

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
