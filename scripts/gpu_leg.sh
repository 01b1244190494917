#!/usr/bin/env bash
# One prepared GPU leg of the base model's training relay (README "A GPU leg"; its record:
# plugins/learned/training/JOURNAL.md).
#
# Here, first:   bash scripts/gpu_leg.sh travel
#   checks out a local branch (gpu-travel, never pushed) without what the leg does not need and
#   the 64 MiB would not hold: the bundled weights, results/, and the Kodak images but the
#   relay's evaluation subset; `bash scripts/gpu_leg.sh home` returns to the branch it left.
# Then, on the CPU machine:   bash scripts/gpu_leg.sh prepare
#   fills the git-ignored .gpu/ with the wheels the device's Python (3.12, torch but no
#   compressai) lacks and with as many training photos (never Kodak) as fit beside the work
#   tree in the 64 MiB that travel, then prints the device call to make.
# There, through the device tool (carry [".gpu"]):   bash scripts/gpu_leg.sh run
#   installs the wheels, continues the base weights on the GPU for GPU_SECONDS of training, and
#   exports float16 safetensors with their sidecar (Kodak point and gap of the images in
#   GPU_KODAK, every leg) and the training log to $OUT. With several rates in GPU_LRS it trains
#   one arm per rate side by side on the one GPU, each into $OUT/lr-<rate>/ with its console log.
# Then here: bench train msh --init <that file> --out <a new relay folder> continues on CPU.
#
# Settings (environment): GPU_SECONDS (training seconds, default 420), GPU_BATCH (16 crops of
# 256 px), GPU_LR (constant rate, 5e-5; the weight average, decay GPU_EMA 0.999, is what is
# exported), GPU_LRS (several rates: arms side by side), GPU_LOADERS (crop-cutting threads per
# arm, 12), GPU_THREADS (torch threads per arm, all cores), GPU_DEVICE (cuda; cpu runs the same
# path for the tests), GPU_PRECISION (auto), GPU_KODAK (datasets/kodak), GPU_INIT (prepare:
# weights to continue, staged as .gpu/init/, the shipped base when unset; run: found there),
# GPU_EXTRA (more `bench train msh` options), TRAIN_DATA (prepare: ../shared/datasets/train;
# run: the staged photos), GPU_STAGE (the staging folder, .gpu), PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${GPU_STAGE:-.gpu}
limit=$((64 * 1024 * 1024))

travel_branch=gpu-travel
# Kodak images the relay evaluates (plugins/learned/training/data.py, DEFAULT_EVAL_IMAGES)
keep_kodak="kodim01 kodim05 kodim15 kodim23"

travel() {
  git diff --quiet HEAD && git diff --cached --quiet ||
    { echo "commit or stash your changes first: travel checks out another branch" >&2; exit 1; }
  local from home_file
  home_file=$(git rev-parse --git-dir)/gpu-leg-home
  from=$(git rev-parse --abbrev-ref HEAD)
  [ "$from" != "$travel_branch" ] || { echo "already on $travel_branch" >&2; exit 1; }
  echo "$from" >"$home_file"
  git checkout -q -B "$travel_branch"
  local drop=() f
  while IFS= read -r f; do
    case "$f" in
      plugins/*/weights/*.safetensors | results/*) drop+=("$f") ;;
      datasets/kodak/kodim*.png) [[ " $keep_kodak " == *" $(basename "$f" .png) "* ]] || drop+=("$f") ;;
    esac
  done < <(git ls-files)
  git rm -q -- "${drop[@]}"
  git -c user.name="gpu leg" -c user.email=gpu-leg@localhost \
    commit -q -m "gpu leg: a light tree to travel (local, never pushed)"
  echo "on $travel_branch: ${#drop[@]} files left behind; back with: bash scripts/gpu_leg.sh home"
}

home() {
  local home_file
  home_file=$(git rev-parse --git-dir)/gpu-leg-home
  [ -f "$home_file" ] || { echo "no travel to come back from" >&2; exit 1; }
  git checkout -q "$(cat "$home_file")"
  git branch -q -D "$travel_branch"
  rm -f "$home_file"
  echo "back on $(git rev-parse --abbrev-ref HEAD)"
}

# The weights the leg continues, into $stage/init/ with their sidecar: GPU_INIT, else the
# shipped base (BUNDLED_NAME in plugins/learned/weights/specs.py), from the work tree or, after
# `travel` left it behind, from the branch travel left.
stage_init() {
  if [ -n "${GPU_INIT:-}" ]; then
    cp "$GPU_INIT" "$stage/init/"
    [ ! -f "${GPU_INIT%.safetensors}.json" ] || cp "${GPU_INIT%.safetensors}.json" "$stage/init/"
    return
  fi
  local name base rev=HEAD home_file ext
  name=$(sed -n 's/^BUNDLED_NAME = "\(.*\)"$/\1/p' plugins/learned/weights/specs.py)
  [ -n "$name" ] || { echo "no BUNDLED_NAME in plugins/learned/weights/specs.py" >&2; exit 1; }
  base=plugins/learned/weights/$name
  home_file=$(git rev-parse --git-dir)/gpu-leg-home
  [ ! -f "$home_file" ] || rev=$(cat "$home_file")
  for ext in safetensors json; do
    if [ -f "$base.$ext" ]; then
      cp "$base.$ext" "$stage/init/"
    else
      git show "$rev:$base.$ext" >"$stage/init/$name.$ext"
    fi
  done
  echo "$stage/init: the shipped base $name (no GPU_INIT)"
}

prepare() {
  local data=${TRAIN_DATA:-../shared/datasets/train}
  rm -rf "$stage" && mkdir -p "$stage/wheels" "$stage/train" "$stage/init"
  stage_init
  # the device's Python is 3.12 and has torch, numpy, pillow, safetensors, rich, typer, pluggy
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$stage/wheels" \
    compressai==1.2.8 constriction==0.5.0 pytorch-msssim==1.0.0
  # what travels besides .gpu: tracked files and untracked files git does not ignore
  local tree
  tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1)
  local budget=$((limit - tree - $(du -sb "$stage" | cut -f1) - 1024 * 1024))
  local used=0 n=0 size
  # photos in a fixed shuffled order (the names' sha256), so a budget takes a fair sample
  while IFS= read -r -d '' f; do
    size=$(stat -c %s "$f")
    [ $((used + size)) -le "$budget" ] || continue
    cp "$f" "$stage/train/$(echo "$f" | sha256sum | cut -c1-12)-$(basename "$f")"
    used=$((used + size)); n=$((n + 1))
  done < <(find "$data" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) -print0 \
           | while IFS= read -r -d '' p; do printf '%s %s\0' "$(echo "$p" | sha256sum | cut -c1-16)" "$p"; done \
           | sort -z | cut -z -d' ' -f2-)
  [ "$n" -gt 0 ] || { echo "no training photo fits: work tree $tree bytes of $limit" >&2; exit 1; }
  echo "$stage: $n training photos ($used bytes) and $(ls "$stage/wheels" | wc -l) wheels; work tree $tree bytes"
  echo 'device run: command "bash scripts/gpu_leg.sh run", carry [".gpu"], timeout_s 600'
}

# One arm: train into a fresh relay folder at rate $2, export its weight average to $1/.
# A run that stops early (an error) still exports its last checkpoint, if it saved one.
arm() {
  local dest=$1 lr=$2 python=${PYTHON:-python3} status=0 init=()
  local relay
  relay=$(mktemp -d)
  if compgen -G "$stage/init/*.safetensors" >/dev/null; then
    init=(--init "$(ls "$stage"/init/*.safetensors | head -1)")
  fi
  # an empty relay folder and no --init: the trainer starts from the shipped base weights
  # shellcheck disable=SC2086
  BENCH_TRAIN_DIR=$relay "$python" -m plugins.learned.training.msh \
    --data "${TRAIN_DATA:-$stage/train}" "${init[@]}" \
    --device "${GPU_DEVICE:-cuda}" --precision "${GPU_PRECISION:-auto}" \
    --batch "${GPU_BATCH:-16}" --lr "$lr" --lr-min "$lr" --warmup 200 --ema-decay "${GPU_EMA:-0.999}" \
    --iterations 100000000 \
    --time-limit "${GPU_SECONDS:-420}" \
    --loader-threads "${GPU_LOADERS:-12}" --threads "${GPU_THREADS:-$(nproc)}" --eval-every 0 \
    --checkpoint-every 1000 --log-every 100 --kodak "${GPU_KODAK:-datasets/kodak}" ${GPU_EXTRA:-} \
    || status=$?
  local ckpt
  ckpt=$(ls -d "$relay"/msh-* 2>/dev/null | head -1) || true
  if [ -n "$ckpt" ] && [ -f "$ckpt/checkpoint.pt" ]; then
    cp "$ckpt/log.jsonl" "$dest/log.jsonl"
    "$python" -m plugins.learned.training.msh --out "$ckpt" --export "$dest/msh-gpu.safetensors" \
      --kodak "${GPU_KODAK:-datasets/kodak}" --threads "${GPU_THREADS:-$(nproc)}" || status=$?
  else
    echo "no checkpoint to export at rate $lr" >&2
    [ "$status" -ne 0 ] || status=1
  fi
  rm -rf "$relay"
  return "$status"
}

run() {
  local out=${OUT:?OUT must name the folder that comes back}
  if compgen -G "$stage/wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/gpu-leg-site "$stage"/wheels/*.whl
    export PYTHONPATH="/tmp/gpu-leg-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export PYTHONUNBUFFERED=1
  read -r -a rates <<<"${GPU_LRS:-${GPU_LR:-5e-5}}"
  if [ "${#rates[@]}" -eq 1 ]; then
    arm "$out" "${rates[0]}"
    return
  fi
  local pids=() failed=0 lr
  for lr in "${rates[@]}"; do
    mkdir -p "$out/lr-$lr"
    arm "$out/lr-$lr" "$lr" >"$out/lr-$lr/console.log" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then
      echo "arm lr ${rates[$i]}: done"
    else
      echo "arm lr ${rates[$i]}: failed"; tail -20 "$out/lr-${rates[$i]}/console.log"; failed=1
    fi
  done
  return "$failed"
}

case "${1:-}" in
  travel) travel ;;
  home) home ;;
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: bash scripts/gpu_leg.sh travel|prepare|run|home" >&2; exit 2 ;;
esac
