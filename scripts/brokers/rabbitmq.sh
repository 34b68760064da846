# RabbitMQ from Debian's rabbitmq-server, on 127.0.0.1:5672 (guest/guest).
provision_rabbitmq() {
  if [ -n "${BUSWAY_RABBITMQ_URL:-}" ]; then
    export_var BUSWAY_RABBITMQ_URL "$BUSWAY_RABBITMQ_URL"
    return
  fi
  if ! port_open 127.0.0.1 5672; then
    command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
    log "starting RabbitMQ"
    rabbitmq-server -detached
    wait_port 127.0.0.1 5672 90 RabbitMQ
    # The port opens before the broker accepts logins; wait for the app to be running.
    rabbitmqctl await_startup --timeout 90 >/dev/null
  fi
  export_var BUSWAY_RABBITMQ_URL "amqp://guest:guest@127.0.0.1:5672/%2f"
}
