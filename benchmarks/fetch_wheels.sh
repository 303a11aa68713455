#!/usr/bin/env bash
# Downloads, HERE (a machine that reaches PyPI), the wheels that benchmarks/gpu_suite.py needs on
# the GPU machine and that its image lacks, for that machine's Python (CPython 3.12, manylinux
# x86-64), into the ignored folder .whl/ at the repository root (or $1).
#
#   bash benchmarks/fetch_wheels.sh            # then carry ".whl" with the run (see benchmarks/README.md)
#
# Only packages proxyjax imports on the suite's paths and the image lacks (its package list:
# grain, array-record, ml-collections, tensorboardX, and grain's portpicker); everything else the
# suite imports (jax, flax, optax, orbax-checkpoint, numpy, absl-py, etils, cloudpickle,
# protobuf, tokenizers, tqdm, psutil, pyyaml) is in the image. One version of each, no
# dependencies (--no-deps): gpu_suite.py installs them with
#   python3 -m pip install --no-index --no-deps --target DIR .whl/*.whl
# and fails with the import error if one is still missing.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-.whl}"
py="${PYTHON:-python3}"
mkdir -p "$dest"
# pip matches manylinux_2_N exactly: name every glibc level a wheel may be tagged with.
platforms=()
for tag in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 \
           manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${tag}_x86_64")
done
packages=(
  "grain==0.2.18"          # the input pipeline (attention rows, train-step batch, compressor)
  "array-record==0.8.6"    # imported by proxyjax.data.sources and grain
  "ml-collections==1.1.0"  # configs
  "tensorboardX==2.6.5"    # metric writer of the training loop (the neural section trains)
  "portpicker==1.6.0"      # imported by grain's multiprocessing
)
"$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --abi cp312 --abi abi3 --abi none "${platforms[@]}" \
  --platform any -d "$dest" "${packages[@]}"
# Keep one version of each package (a stale second one stops the install).
ls -1 "$dest"/*.whl
du -ch "$dest"/*.whl | tail -n 1
