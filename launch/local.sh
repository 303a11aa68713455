#!/usr/bin/env bash
# N proxyjax processes on this machine (127.0.0.1), each with fake CPU devices.
#
#   launch/local.sh NUM_PROCESSES DEVICES_PER_PROCESS [proxyjax.main flags...]
#   launch/local.sh 2 4 --config=configs/tiny.py --workdir=/tmp/run2
#
# Process 0 writes to this terminal, process i > 0 to $LOG_DIR/process_i.log
# (default: a fresh temporary directory). Waits for all of them; when one
# fails, stops the others and exits with its status.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,11p' "$0" >&2
  exit 2
fi
num_processes=$1
devices=$2
shift 2

cd "$(dirname "$0")/.."
log_dir=${LOG_DIR:-$(mktemp -d -t proxyjax-local.XXXXXX)}
mkdir -p "$log_dir"
port=${PORT:-$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

export JAX_PLATFORMS=cpu XLA_FLAGS="${XLA_FLAGS:-}" TOKENIZERS_PARALLELISM=false

pids=()
stop_all() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
}
trap 'stop_all; exit 130' INT TERM

for ((i = 0; i < num_processes; i++)); do
  cmd=(python -m proxyjax.main "$@"
       --coordinator_address="127.0.0.1:$port" --num_processes="$num_processes"
       --process_id="$i" --local_device_count="$devices")
  if [[ $i -eq 0 ]]; then
    "${cmd[@]}" &
  else
    "${cmd[@]}" >"$log_dir/process_$i.log" 2>&1 &
  fi
  pids+=($!)
done
echo "local.sh: $num_processes processes x $devices CPU devices on 127.0.0.1:$port;" \
     "logs of processes 1..$((num_processes - 1)) in $log_dir" >&2

status=0
running=("${pids[@]}")
while [[ ${#running[@]} -gt 0 && $status -eq 0 ]]; do
  sleep 1
  still=()
  for pid in "${running[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      still+=("$pid")
      continue
    fi
    set +e
    wait "$pid"
    code=$?
    set -e
    if [[ $code -ne 0 && $status -eq 0 ]]; then
      echo "local.sh: process with pid $pid exited with status $code; stopping the others" >&2
      status=$code
    fi
  done
  running=("${still[@]+"${still[@]}"}")
done
if [[ $status -ne 0 ]]; then
  stop_all
  wait 2>/dev/null || true
fi
exit "$status"
