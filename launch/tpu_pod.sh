#!/usr/bin/env bash
# proxyjax on a Cloud TPU pod slice: the same command on every host (worker).
#
#   TPU=my-v5p-128 ZONE=us-east5-a launch/tpu_pod.sh setup        # copy repo, install
#   TPU=my-v5p-128 ZONE=us-east5-a launch/tpu_pod.sh train \
#       --config=configs/7b.py --workdir=/mnt/runs/7b --config.data.sources='jsonl:/mnt/data/*.jsonl'
#   TPU=... ZONE=... launch/tpu_pod.sh logs                        # follow worker 0 (WORKER=i)
#   TPU=... ZONE=... launch/tpu_pod.sh stop                        # SIGTERM: checkpoint, exit
#
# jax.distributed.initialize() finds the hosts, the process count and the process
# id from the TPU metadata (--distributed=on). WORKDIR and the data must be on
# storage every host sees at the same path (Filestore/NFS, or a gcsfuse mount).
# Optional: PROJECT, REPO_DIR (on the hosts, default ~/proxyjax), PYTHON.
set -euo pipefail

: "${TPU:?set TPU to the TPU VM name}"
: "${ZONE:?set ZONE to its zone}"
REPO_DIR=${REPO_DIR:-proxyjax}
PYTHON=${PYTHON:-python3}
gcloud_args=(--zone="$ZONE")
[[ -n "${PROJECT:-}" ]] && gcloud_args+=(--project="$PROJECT")

on_all_hosts() {
  gcloud compute tpus tpu-vm ssh "$TPU" "${gcloud_args[@]}" --worker=all --command="$1"
}

cmd=${1:-}
shift || true
case "$cmd" in
  setup)
    here=$(cd "$(dirname "$0")/.." && pwd)
    tar -C "$here" --exclude=.git --exclude='*.egg-info' --exclude=__pycache__ -czf /tmp/proxyjax.tgz .
    gcloud compute tpus tpu-vm scp /tmp/proxyjax.tgz "$TPU":/tmp/proxyjax.tgz \
      "${gcloud_args[@]}" --worker=all
    on_all_hosts "mkdir -p $REPO_DIR && tar -C $REPO_DIR -xzf /tmp/proxyjax.tgz && \
      cd $REPO_DIR && $PYTHON -m pip install -q -U 'jax[tpu]' && $PYTHON -m pip install -q -e ."
    ;;
  train|eval)
    # Quote the flags once for the remote shell. The job runs detached (nohup,
    # its own session) so a dropped ssh connection does not kill it; follow it
    # with `tpu_pod.sh logs`.
    flags=$(printf ' %q' "$@")
    on_all_hosts "cd $REPO_DIR && TOKENIZERS_PARALLELISM=false nohup setsid \
      $PYTHON -u -m proxyjax.main --mode=$cmd --distributed=on$flags \
      >>~/proxyjax.log 2>&1 </dev/null & echo \"\$(hostname): started pid \$!\""
    ;;
  logs)
    gcloud compute tpus tpu-vm ssh "$TPU" "${gcloud_args[@]}" --worker="${WORKER:-0}" \
      --command="tail -n 200 -f ~/proxyjax.log"
    ;;
  stop)
    on_all_hosts "pkill -TERM -f -u \$(id -u) '[p]roxyjax.main' || true"
    ;;
  *)
    sed -n '2,14p' "$0" >&2
    exit 2
    ;;
esac
