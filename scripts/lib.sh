# Helpers shared by scripts/test and scripts/brokers/*.sh.

log() { printf '[busway] %s\n' "$*" >&2; }

# port_open HOST PORT: whether something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_port HOST PORT SECONDS NAME
wait_port() {
  local host=$1 port=$2 secs=$3 name=$4 i
  for ((i = 0; i < secs * 5; i++)); do
    port_open "$host" "$port" && return 0
    sleep 0.2
  done
  log "$name did not open $host:$port within ${secs}s"
  return 1
}

APT_UPDATED=
# apt_install PACKAGE...: installs Debian packages that are missing.
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  if [ -z "$APT_UPDATED" ]; then
    $sudo apt-get update -qq
    APT_UPDATED=1
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

EXPORTS=()
# export_var NAME VALUE: exports it now and remembers it for print_exports.
export_var() {
  export "$1=$2"
  EXPORTS+=("$1")
}

print_exports() {
  local name
  for name in "${EXPORTS[@]}"; do
    printf 'export %s=%q\n' "$name" "${!name}"
  done
}
