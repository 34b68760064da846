# PostgreSQL from Debian's packages, on 127.0.0.1:5432, database `test` (trust auth on CI machines).
provision_postgres() {
  if [ -n "${BUSWAY_POSTGRES_URL:-}" ]; then
    export_var BUSWAY_POSTGRES_URL "$BUSWAY_POSTGRES_URL"
    return
  fi
  if ! port_open 127.0.0.1 5432; then
    command -v pg_ctlcluster >/dev/null || apt_install postgresql
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
    wait_port 127.0.0.1 5432 60 PostgreSQL
  fi
  export_var BUSWAY_POSTGRES_URL "postgres://postgres@127.0.0.1:5432/postgres"
}
