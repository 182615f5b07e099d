#!/usr/bin/env bash
# danlu CI pipeline: dataset -> training (gate on success) -> evaluation gate -> convert ->
# merge -> deploy, with the `danlu` CLI and its exit codes only (no SDK, no API calls by hand).
#
# Usage:
#   danlu-pipeline.sh DATASET_FILE CONFIG THRESHOLD [EXPECTED_TEXT]
#
#   DATASET_FILE   a dataset file (OpenAI messages, Alpaca, ShareGPT, text), pushed as a new
#                  version of dataset $DANLU_DATASET_NAME; the job trains on exactly that version
#                  (it replaces the config's first dataset).
#   CONFIG         a training config: YAML file or built-in name (`danlu configs ls`).
#   THRESHOLD      evaluation gate, 0..1: the fraction of the config's evaluation prompts whose
#                  answer at the LAST checkpoint must contain EXPECTED_TEXT.
#   EXPECTED_TEXT  the substring a good answer contains (default $DANLU_EVAL_EXPECT).
#
# Environment:
#   DANLU_TARGET, DANLU_TOKEN   endpoint (the gateway) and bearer token, read by `danlu` itself
#   DANLU_PROJECT               project (default: default)
#   DANLU_DATASET_NAME          dataset id (default: DATASET_FILE's name without extension)
#   DANLU_JOB_NAME              training job id (default: ci-<UTC time>-<random>)
#   DANLU_TRAIN_ARGS            extra `danlu train` arguments, split on spaces
#                               (e.g. "--set optimization.max_steps=50 --deepspeed zero2")
#   DANLU_DEPLOY_MODEL          deploy this model when there is no merged model to deploy
#                               (e.g. the base model, as a serving smoke test); default: none
#   DANLU_SKIP_CONVERT          1: stop after the evaluation gate
#   DANLU_CONVERT_ARGS, DANLU_MERGE_ARGS  extra `danlu convert` / `danlu merge` arguments
#                               (e.g. "--dtype bf16 --max-shard-size 5GB")
#   DANLU_BIN, PYTHON           the CLI (default: danlu) and a Python 3 for the JSON checks
#
# Exit status: 0 when every stage passed; 1 when a stage failed (the failing `danlu` command
# printed why on stderr); 2 for usage errors. Convert and merge are reported as skipped, not
# failed, where the client has no `danlu convert` or the server no conversion service
# (UNIMPLEMENTED); any other failure of theirs fails the pipeline.
set -euo pipefail

usage() {
    sed -n '5,17p' "$0" >&2
    exit 2
}

[[ $# -ge 3 && $# -le 4 ]] || usage
DATASET_FILE=$1
CONFIG=$2
THRESHOLD=$3
EXPECTED=${4:-${DANLU_EVAL_EXPECT:-}}
[[ -f $DATASET_FILE ]] || { echo "error: dataset file '$DATASET_FILE' not found" >&2; exit 2; }
[[ -n $EXPECTED ]] || { echo "error: no EXPECTED_TEXT (argument 4 or DANLU_EVAL_EXPECT)" >&2; exit 2; }

DANLU_BIN=${DANLU_BIN:-danlu}
PYTHON=${PYTHON:-python3}
PROJECT=${DANLU_PROJECT:-default}
DATASET_NAME=${DANLU_DATASET_NAME:-$(basename "${DATASET_FILE%.*}")}
JOB=${DANLU_JOB_NAME:-ci-$(date -u +%Y%m%d-%H%M%S)-$((RANDOM % 10000))}
read -r -a TRAIN_ARGS <<<"${DANLU_TRAIN_ARGS:-}"

"$PYTHON" - "$THRESHOLD" <<'EOF' || { echo "error: THRESHOLD must be a number in [0, 1]" >&2; exit 2; }
import sys
t = float(sys.argv[1])
sys.exit(0 if 0 <= t <= 1 else 1)
EOF

danlu() { "$DANLU_BIN" --project "$PROJECT" "$@"; }
stage() { printf '\n==> %s\n' "$*"; }
# json_field A.B: one field (dotted path) of the JSON document on stdin.
json_field() {
    "$PYTHON" -c 'import functools,json,sys; print(functools.reduce(lambda d, k: d[k], sys.argv[1].split("."), json.load(sys.stdin)))' "$1"
}

SUMMARY=()
trap 'status=$?; if ((status != 0)); then printf "\npipeline FAILED (exit %s) after: %s\n" "$status" "${SUMMARY[*]:-nothing}" >&2; fi' EXIT

stage "push dataset $DATASET_FILE as $DATASET_NAME (project $PROJECT)"
VERSION=$(danlu -o json datasets push "$DATASET_FILE" --name "$DATASET_NAME" | json_field dataset_version.name)
echo "dataset version: $VERSION"
SUMMARY+=("dataset=$VERSION")

stage "train $CONFIG as job $JOB (follow)"
# --follow exits non-zero unless the job SUCCEEDED: set -e fails the pipeline here.
danlu train "$CONFIG" --name "$JOB" --set "datasets[0].dataset=$VERSION" \
    ${TRAIN_ARGS[@]+"${TRAIN_ARGS[@]}"} --follow
SUMMARY+=("job=$JOB")

stage "evaluation gate: answers at the last checkpoint containing '$EXPECTED' >= $THRESHOLD"
EVALS=$(danlu -o json jobs evals "$JOB")
read -r -d '' GATE <<'EOF' || true
import json
import sys

expected, threshold = sys.argv[1], float(sys.argv[2])
doc = json.load(sys.stdin)
if not doc["steps"] or not doc["prompts"]:
    sys.exit("no evaluation answers stored with the checkpoints: set evaluation.prompts")
step = str(doc["steps"][-1])
hits = 0
for row in doc["prompts"]:
    answer = row["answers"].get(step) or ""
    ok = expected in answer
    hits += ok
    print(f"  [{'ok' if ok else 'MISS'}] {row['prompt']!r} -> {answer!r}", file=sys.stderr)
score = hits / len(doc["prompts"])
print(f"step {step}: {hits}/{len(doc['prompts'])} = {score:.2f} (threshold {threshold})", file=sys.stderr)
if score < threshold:
    sys.exit(f"evaluation gate failed: {score:.2f} < {threshold}")
print(step)
EOF
STEP=$("$PYTHON" -c "$GATE" "$EXPECTED" "$THRESHOLD" <<<"$EVALS")
SUMMARY+=("checkpoint=$JOB@step-$STEP")

MERGED=""
if [[ ${DANLU_SKIP_CONVERT:-0} == 1 ]]; then
    stage "convert / merge: skipped (DANLU_SKIP_CONVERT=1)"
    SUMMARY+=("convert=skipped")
elif ! danlu convert --help >/dev/null 2>&1; then
    stage "convert / merge: skipped (this danlu client has no 'convert' command)"
    SUMMARY+=("convert=skipped")
elif ! PROBE=$(danlu conversions ls 2>&1 >/dev/null) && [[ $PROBE == *UNIMPLEMENTED* ]]; then
    stage "convert / merge: skipped (the server has no conversion service)"
    SUMMARY+=("convert=skipped")
else
    ADAPTER="$JOB-adapter"
    MERGED="$JOB-merged"
    BASE=$(danlu -o json jobs show "$JOB" | json_field spec.base_model)
    stage "convert $JOB@step-$STEP -> $ADAPTER"
    # both wait for their job and exit non-zero unless it succeeded
    danlu convert "$JOB" --checkpoint "step-$STEP" --name "$ADAPTER" ${DANLU_CONVERT_ARGS:-}
    SUMMARY+=("adapter=$ADAPTER")
    stage "merge $ADAPTER into $BASE -> $MERGED"
    danlu merge "$BASE" "$ADAPTER" --name "$MERGED" ${DANLU_MERGE_ARGS:-}
    SUMMARY+=("merged=$MERGED")
fi

DEPLOY=${MERGED:-${DANLU_DEPLOY_MODEL:-}}
if [[ -n $DEPLOY ]]; then
    stage "deploy $DEPLOY"
    danlu deploy "$DEPLOY"
    danlu chat "$DEPLOY" -p "Hello" --max-new-tokens 16 --no-streamer >/dev/null
    SUMMARY+=("deployment=$DEPLOY")
else
    stage "deploy: skipped (no merged model; set DANLU_DEPLOY_MODEL to deploy one)"
fi

printf '\npipeline passed: %s\n' "${SUMMARY[*]}"
