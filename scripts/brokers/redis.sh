# Redis from Debian's redis-server, on 127.0.0.1:6379, nothing kept on disk.
provision_redis() {
  if [ -n "${BUSWAY_REDIS_URL:-}" ]; then
    export_var BUSWAY_REDIS_URL "$BUSWAY_REDIS_URL"
    return
  fi
  if ! port_open 127.0.0.1 6379; then
    command -v redis-server >/dev/null || apt_install redis-server
    log "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    wait_port 127.0.0.1 6379 30 Redis
  fi
  export_var BUSWAY_REDIS_URL "redis://127.0.0.1:6379"
}
