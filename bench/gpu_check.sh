#!/usr/bin/env bash
# The train stage's recipe on a GPU machine that has JAX (or PyTorch) but no TensorFlow and no data.
# Prepare here (the workspace after quality,dedup,split of FER2013; keras and its missing pure deps as wheels):
#   python -m bench.train_gpu pack --work W --out .gpu/fer.npz
#   pip download --no-deps -d .whl keras namex; pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 -d .whl optree
# There, from the repository root with .gpu and .whl beside it:  LIMIT=540 bash bench/gpu_check.sh
# Each run writes OUT/<name>.log: the train stage's log, its wall time, one JSON line of results, history.csv.
set -u
OUT="${OUT:-/tmp/gpu-out}"; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" KERAS_BACKEND="${KERAS_BACKEND:-jax}" XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import keras; keras.ops.ones((2, 2)); print('keras', keras.__version__, 'on', keras.backend.backend())" || export KERAS_BACKEND=torch
one() {
    local name=$1; shift
    local t0=$SECONDS
    timeout "${LIMIT:-540}" python3 -m bench.train_gpu train --data .gpu/fer.npz --work "/tmp/$name" "$@" > "$OUT/$name.log" 2>&1
    echo "rc $? wall $((SECONDS - t0)) s" >> "$OUT/$name.log"
    cat "/tmp/$name/model/history.csv" >> "$OUT/$name.log" 2>/dev/null
}
# The GPU recipe, and the CPU default recipe beside it (the same code, another backend).
one gpu --set model=fer-vgg-wide --set epochs=80 --set precision=mixed_bfloat16 --set batch_size=256 --set learning_rate=0.003 &
one cpu-default &
wait
grep -h '^{' "$OUT"/*.log
