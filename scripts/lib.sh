# Helpers shared by scripts/test and scripts/bench: a MongoDB-compatible server for a run.
# Source it; call `ensure_mongo` to get MONGO_URL set, and `cleanup` (on EXIT) to stop
# whatever was started.

SECANTUS_VERSION="0.7.0b3"
work=$(mktemp -d "${TMPDIR:-/tmp}/beacon.XXXXXX")
started_pids=()

# Stops everything `spawn` started, newest first, and removes the scratch directory.
cleanup() {
  local i
  for ((i = ${#started_pids[@]} - 1; i >= 0; i--)); do
    kill "${started_pids[$i]}" 2>/dev/null || true
    wait "${started_pids[$i]}" 2>/dev/null || true
  done
  started_pids=()
  rm -rf "$work"
}

# spawn LOG CMD...: runs CMD in the background, logging to LOG; its pid is in $spawned.
spawn() {
  local log=$1; shift
  "$@" >"$log" 2>&1 &
  spawned=$!
  started_pids+=("$spawned")
}

say() { printf '\n==> %s\n' "$*"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_for_port PORT LOG PID: until something listens on PORT; fails if PID exits first.
wait_for_port() {
  local port=$1 log=$2 pid=$3
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "process exited early:"; cat "$log"; exit 1; fi
    sleep 0.2
  done
  echo "nothing listened on port $port within 30 s:"; cat "$log"; exit 1
}

start_secantus() {
  local venv=.venv/secantus
  if [ ! -x "$venv/bin/secantusd-py" ]; then
    say "installing SecantusDB $SECANTUS_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --pre "SecantusDB==$SECANTUS_VERSION"
  fi
  local port; port=$(free_port)
  say "starting SecantusDB on 127.0.0.1:$port"
  spawn "$work/db.log" "$venv/bin/secantusd-py" --host 127.0.0.1 --port "$port" \
    --storage-path "$work/db" --log-level WARNING
  wait_for_port "$port" "$work/db.log" "$spawned"
  export MONGO_URL="mongodb://127.0.0.1:$port/beacon_test"
}

start_mongod() {
  local port; port=$(free_port)
  say "starting mongod on 127.0.0.1:$port (single-node replica set)"
  mkdir -p "$work/db"
  spawn "$work/db.log" mongod --replSet rs0 --bind_ip 127.0.0.1 --port "$port" --dbpath "$work/db"
  wait_for_port "$port" "$work/db.log" "$spawned"
  mongosh --quiet --port "$port" --eval \
    "rs.initiate({_id:'rs0',members:[{_id:0,host:'127.0.0.1:$port'}]})" >/dev/null
  export MONGO_URL="mongodb://127.0.0.1:$port/beacon_test?directConnection=true"
}

ensure_mongo() {
  if [ -n "${MONGO_URL:-}" ]; then
    say "using MONGO_URL from the environment"
  elif command -v mongod >/dev/null && command -v mongosh >/dev/null; then
    start_mongod
  else
    start_secantus
  fi
}

# The wasm-bindgen version in Cargo.lock: the CLI must match the library exactly.
wasm_bindgen_version() {
  awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock
}

# ensure_wasm_toolchain: the wasm32 target and the wasm-bindgen CLI at the locked
# version. Returns non-zero, having said why, if either cannot be
# installed.
ensure_wasm_toolchain() {
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown || {
      wasm_unavailable="'rustup target add wasm32-unknown-unknown' failed"
      return 1
    }
  fi
  local want have
  want=$(wasm_bindgen_version)
  have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
  if [[ "$have" != "$want" ]]; then
    say "installing wasm-bindgen-cli $want (cargo install; about 2 minutes)"
    # --locked first; without it when the registry lacks one of the CLI's pinned deps.
    cargo install wasm-bindgen-cli --version "$want" --locked \
      || cargo install wasm-bindgen-cli --version "$want" || {
      wasm_unavailable="'cargo install wasm-bindgen-cli --version $want' failed"
      return 1
    }
  fi
}

# ensure_browser: headless Chromium and its WebDriver, from Debian's
# packages when missing. Sets CHROMEDRIVER. Returns non-zero, having said why, on failure.
ensure_browser() {
  local missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
  if ((${#missing[@]})); then
    say "installing ${missing[*]} (apt-get)"
    local sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    { "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || {
      browser_unavailable="'apt-get install ${missing[*]}' failed"
      return 1
    }
  fi
  CHROMEDRIVER=$(command -v chromedriver)
  export CHROMEDRIVER
}

BINARYEN_VERSION="132.0.0"
TERSER_VERSION="5.51.4"

# find_wasm_opt: sets WASM_OPT to a wasm-opt that reads what today's rustc and
# wasm-bindgen emit (bulk memory, reference types): version 116 or later. Debian 12's
# binaryen (108) is too old, so fall back to the npm package, installed into .tools/
# (git-ignored). Leaves WASM_OPT empty, having said why, if neither is available.
find_wasm_opt() {
  WASM_OPT=""
  local v
  v=$(wasm-opt --version 2>/dev/null | awk '{print $3}' || true)
  if [[ "$v" =~ ^[0-9]+$ ]] && ((v >= 116)); then
    WASM_OPT=$(command -v wasm-opt)
    return 0
  fi
  local npm_wasm_opt=.tools/binaryen/node_modules/.bin/wasm-opt
  if [[ ! -x "$npm_wasm_opt" ]] && command -v npm >/dev/null; then
    say "installing wasm-opt (npm binaryen@$BINARYEN_VERSION into .tools/)"
    npm install --silent --no-audit --no-fund --prefix .tools/binaryen "binaryen@$BINARYEN_VERSION" >/dev/null \
      || echo "npm install binaryen failed"
  fi
  if [[ -x "$npm_wasm_opt" ]]; then
    WASM_OPT=$npm_wasm_opt
  else
    echo "no usable wasm-opt (need binaryen >= 116, found '${v:-none}'; npm unavailable)"
  fi
}

# find_terser: sets TERSER to terser (npm, into .tools/, git-ignored), the JavaScript
# minifier that shrinks the snippet every visitor downloads.
# Leaves it empty, having said why, if npm is unavailable.
find_terser() {
  TERSER=.tools/terser/node_modules/.bin/terser
  if [[ ! -x "$TERSER" ]] && command -v npm >/dev/null; then
    say "installing terser (npm terser@$TERSER_VERSION into .tools/)"
    npm install --silent --no-audit --no-fund --prefix .tools/terser "terser@$TERSER_VERSION" >/dev/null \
      || echo "npm install terser failed"
  fi
  if [[ ! -x "$TERSER" ]]; then
    echo "no terser (npm unavailable): the JavaScript is not minified"
    TERSER=""
  fi
}
