# Microsoft's official Service Bus SDKs, for busway-sb-emulator's fidelity tests
# (crates/busway-sb-emulator/tests/sdk_python.rs and sdk_js.rs).
#
# Python's azure-servicebus goes into a venv and JavaScript's @azure/service-bus into an npm
# prefix, both under $BUSWAY_CACHE and reused while the pinned version is there. 7.15.0 is the
# newest azure-servicebus (it honours the port of a UseDevelopmentEmulator connection string
# since 7.14.0); 7.9.5 is the newest @azure/service-bus. Needs python3 (with venv), node and npm.

SB_PYTHON_SDK_VERSION=7.15.0
SB_JS_SDK_VERSION=7.9.5

# servicebus_python: path of a Python with azure-servicebus $SB_PYTHON_SDK_VERSION.
servicebus_python() {
  local venv=$BUSWAY_CACHE/venv-servicebus
  if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('azure-servicebus') != '$SB_PYTHON_SDK_VERSION')" 2>/dev/null; then
    log "installing Python's azure-servicebus $SB_PYTHON_SDK_VERSION into $venv"
    python3 -m venv "$venv" >&2 || { apt_install python3-venv && python3 -m venv "$venv" >&2; }
    "$venv/bin/pip" install -q "azure-servicebus==$SB_PYTHON_SDK_VERSION" >&2
  fi
  printf '%s\n' "$venv/bin/python"
}

# servicebus_node_modules: a node_modules directory holding @azure/service-bus $SB_JS_SDK_VERSION.
servicebus_node_modules() {
  local prefix=$BUSWAY_CACHE/npm-servicebus
  local installed=$prefix/node_modules/@azure/service-bus/package.json
  if ! grep -q "\"version\": \"$SB_JS_SDK_VERSION\"" "$installed" 2>/dev/null; then
    command -v npm >/dev/null || apt_install nodejs npm
    log "installing @azure/service-bus $SB_JS_SDK_VERSION into $prefix"
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
      "@azure/service-bus@$SB_JS_SDK_VERSION" >&2
  fi
  printf '%s\n' "$prefix/node_modules"
}

# provision_servicebus_sdks: exports BUSWAY_SB_PYTHON and BUSWAY_SB_NODE_MODULES.
provision_servicebus_sdks() {
  export_var BUSWAY_SB_PYTHON "$(servicebus_python)"
  export_var BUSWAY_SB_NODE_MODULES "$(servicebus_node_modules)"
}
