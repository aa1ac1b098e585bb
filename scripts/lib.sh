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
