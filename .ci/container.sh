#!/usr/bin/env bash
# CI's container stage: build the converter image and two serve images for real (the example Keras
# image classifier as ONNX, a PMML regression), run each on 127.0.0.1, and check predictions against
# numbers computed outside the container, the slim image's contents, its user, SIGTERM and its size;
# then run the model-less images exactly as deploy/kserve/'s ClusterServingRuntimes declare them.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ENGINE=${ENGINE:-podman}
DEV_PY=$ROOT/.venv/dev/bin/python
SIZE_BUDGET_MB=${SIZE_BUDGET_MB:-150}
passed=0; failed=0
# Names unique to this run: two runs on one machine (several people share it) must not remove each other's containers.
ONNX_C=mp-ci-onnx-$$ PMML_C=mp-ci-pmml-$$ FETCH_C=mp-ci-fetch-$$
LOGS=$(mktemp -d /tmp/mp-ci-logs.XXXXXX)
t0=$(date +%s)
stage() { echo "=== [container $(( $(date +%s) - t0 ))s] $*"; }
ok() { echo "  ok   $*"; passed=$((passed + 1)); }
fail() { echo "  FAIL $*"; failed=$((failed + 1)); }
die() { echo "container stage: $*" >&2; echo "container: $passed passed, $((failed + 1)) failed"; exit 1; }
cleanup() {
  for c in "$ONNX_C" "$PMML_C" "$FETCH_C"; do $ENGINE rm -f "$c" >/dev/null 2>&1 || true; done
  if [ -n "${http_pid:-}" ]; then kill "$http_pid" 2>/dev/null || true; fi
  rm -rf "${bundle:-}" "${srvdir:-}"
}
trap cleanup EXIT

# The workplace's shared/ folder (offline podman, local base images): .ci/shared-dir finds it.
if [ "$ENGINE" = podman ]; then
  shared=$(bash "$ROOT/.ci/shared-dir" container/offline-engine.sh) || die "no offline podman script"
  engine_script=$shared/container/offline-engine.sh
  if ! command -v podman >/dev/null; then
    stage "container engine (podman, local base images)"
    bash "$engine_script" || die "could not prepare podman"
  else
    bash "$engine_script" >/dev/null || die "could not prepare the base images"
  fi
fi

cleanup
free_port() { "$DEV_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() {  # url timeout
  local deadline=$(( $(date +%s) + $2 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    curl -fsS "$1/v2/health/ready" >/dev/null 2>&1 && return 0
    sleep 1
  done
  return 1
}
size_mb() { $ENGINE image inspect --format '{{.Size}}' "$1" | awk '{printf "%d", $1/1000000}'; }

stage "converter image"
b0=$(date +%s)
make image-convert ENGINE="$ENGINE" >$LOGS/convert-image.log 2>&1 || { tail -40 $LOGS/convert-image.log; die "converter image build failed"; }
echo "  built in $(( $(date +%s) - b0 ))s, $(size_mb modelport-convert:latest) MB"

stage "ONNX serve image (example Keras image classifier)"
b0=$(date +%s)
make image ENGINE="$ENGINE" >$LOGS/serve-image.log 2>&1 || { tail -40 $LOGS/serve-image.log; die "serve image build failed"; }
echo "  built in $(( $(date +%s) - b0 ))s"
base_mb=$(size_mb python:3.11-slim); serve_mb=$(size_mb modelport-serve:latest)
added=$((serve_mb - base_mb))
echo "  size: modelport-serve ${serve_mb} MB = python:3.11-slim ${base_mb} MB + ${added} MB (budget ${SIZE_BUDGET_MB} MB)"
[ "$added" -le "$SIZE_BUDGET_MB" ] && ok "serve image adds ${added} MB <= ${SIZE_BUDGET_MB} MB" || fail "serve image adds ${added} MB > ${SIZE_BUDGET_MB} MB"

found=$($ENGINE run --rm --entrypoint python modelport-serve:latest -c \
  "import importlib.util as u, shutil; print(' '.join([m for m in ('tensorflow','torch','keras','tf2onnx','sklearn','pypmml','jpype') if u.find_spec(m)] + (['java'] if shutil.which('java') else [])))")
[ -z "$found" ] && ok "ONNX serve image has no tensorflow, torch, keras, sklearn, pypmml or java" || fail "ONNX serve image contains: $found"
uid=$($ENGINE run --rm --entrypoint id modelport-serve:latest -u)
[ "$uid" != 0 ] && ok "serve image runs as uid $uid (non-root)" || fail "serve image runs as root"

bundle=$(mktemp -d)
cid=$($ENGINE create modelport-serve:latest) && $ENGINE cp "$cid:/models/." "$bundle/" && $ENGINE rm "$cid" >/dev/null
port=$(free_port); gport=$(free_port)
$ENGINE run -d --name $ONNX_C -p "127.0.0.1:$port:5000" -p "127.0.0.1:$gport:8081" modelport-serve:latest >/dev/null \
  || die "could not start the serve image"
if wait_ready "http://127.0.0.1:$port" 120; then
  ok "ONNX container ready on 127.0.0.1:$port"
  if GRPC_ADDRESS="127.0.0.1:$gport" "$DEV_PY" .ci/container_check.py onnx "http://127.0.0.1:$port" "$bundle" examples/sample.jpg; then ok "ONNX predictions"; else fail "ONNX predictions"; fi
else
  $ENGINE logs $ONNX_C | tail -30; fail "ONNX container never became ready"
fi
$ENGINE stop -t 30 $ONNX_C >/dev/null
code=$($ENGINE inspect --format '{{.State.ExitCode}}' $ONNX_C)
[ "$code" = 0 ] && ok "SIGTERM: exited 0" || { $ENGINE logs $ONNX_C | tail -20; fail "SIGTERM: exit code $code"; }
# Logs are read whole first: `podman logs | grep -q` under pipefail fails when grep exits early (SIGPIPE).
logs=$($ENGINE logs $ONNX_C 2>&1)
grep -q 'runtime.access: GET /v2/health/ready' <<<"$logs" && ok "access log written unbuffered" || fail "no access log lines in the container log"

stage "fetch at start (an image with no model, the old model repository served from the host)"
b0=$(date +%s)
make image-empty ENGINE="$ENGINE" >$LOGS/empty-image.log 2>&1 || { tail -40 $LOGS/empty-image.log; die "model-less serve image build failed"; }
echo "  built in $(( $(date +%s) - b0 ))s"
out=$($ENGINE run --rm modelport-serve-empty:latest 2>&1); code=$?
[ "$code" = 2 ] && grep -q "no model in /models" <<<"$out" && ok "no model and nothing to fetch: exit 2 with a clear message" \
  || fail "empty image without fetch settings: exit $code: ${out: -200}"
srvdir=$(mktemp -d); mkdir -p "$srvdir/model/model"
cp "$bundle"/colour-classifier/1/model.onnx "$srvdir/model/model/classifier.onnx"
(cd "$srvdir" && "$DEV_PY" -m zipfile -c model.zip model >/dev/null)
hport=$(free_port); fport=$(free_port)
(cd "$srvdir" && exec "$DEV_PY" -m http.server "$hport" --bind 127.0.0.1 >/dev/null 2>&1) & http_pid=$!
# The repository's name resolves through --add-host (what the old HOSTS variable did); HOSTS itself
# cannot be written by the non-root user, which must log the equivalent flag and carry on.
$ENGINE run -d --name $FETCH_C --network host --add-host legacy-repo:127.0.0.1 -e PORT="$fport" -e HOST=127.0.0.1 \
  -e XQUERY_ADDR="http://legacy-repo:$hport/model.zip" -e MODEL_ID=42 -e MODEL_VERSION=3 -e GUID=ci-guid \
  -e MODEL_NAME=fetched -e "HOSTS=10.9.8.7<->other-host" modelport-serve-empty:latest >/dev/null
if wait_ready "http://127.0.0.1:$fport" 90 && [[ $(curl -fsS "http://127.0.0.1:$fport/v2/models/fetched") == *'"inputs"'* ]]; then
  ok "model fetched from the model repository (XQUERY_ADDR, MODEL_ID, ...) at start and served"
else
  $ENGINE logs $FETCH_C | tail -20; fail "fetch at start"
fi
logs=$($ENGINE logs $FETCH_C 2>&1)
grep -q "add-host other-host:10.9.8.7" <<<"$logs" && ok "HOSTS without permission: logged the --add-host equivalent" || fail "HOSTS not handled"
$ENGINE rm -f $FETCH_C >/dev/null; kill "$http_pid" 2>/dev/null; http_pid=

stage "PMML serve image (hand-written regression)"
b0=$(date +%s)
make image-pmml ENGINE="$ENGINE" MODEL=tests/pmml/data/claims_regression.pmml NAME=claims >$LOGS/pmml-image.log 2>&1 \
  || { tail -40 $LOGS/pmml-image.log; die "PMML serve image build failed"; }
echo "  built in $(( $(date +%s) - b0 ))s, $(size_mb modelport-serve-pmml:latest) MB"
found=$($ENGINE run --rm --entrypoint python modelport-serve-pmml:latest -c \
  "import importlib.util as u; print(' '.join(m for m in ('onnxruntime','tensorflow','torch') if u.find_spec(m)))")
[ -z "$found" ] && ok "PMML serve image has no onnxruntime, tensorflow or torch" || fail "PMML serve image contains: $found"
port=$(free_port)
$ENGINE run -d --name $PMML_C -p "127.0.0.1:$port:5000" modelport-serve-pmml:latest >/dev/null || die "could not start the PMML image"
if wait_ready "http://127.0.0.1:$port" 120; then
  ok "PMML container ready"
  if "$DEV_PY" .ci/container_check.py pmml "http://127.0.0.1:$port"; then ok "PMML predictions"; else fail "PMML predictions"; fi
else
  $ENGINE logs $PMML_C | tail -30; fail "PMML container never became ready"
fi
$ENGINE stop -t 30 $PMML_C >/dev/null
code=$($ENGINE inspect --format '{{.State.ExitCode}}' $PMML_C)
[ "$code" = 0 ] && ok "PMML SIGTERM: exited 0" || fail "PMML SIGTERM: exit code $code"

stage "KServe: the serve images run as deploy/kserve/ declares them, for every shape of /mnt/models"
b0=$(date +%s)
make image-pmml-empty ENGINE="$ENGINE" >$LOGS/pmml-empty-image.log 2>&1 \
  || { tail -40 $LOGS/pmml-empty-image.log; die "model-less PMML serve image build failed"; }
echo "  model-less PMML image built in $(( $(date +%s) - b0 ))s"
# Image, command, args ({{.Name}} substituted), port 8080, UID, read-only root, emptyDirs, limits: all
# read from the ClusterServingRuntime YAML; the model mounted read-only at /mnt/models (.ci/kserve_check.py).
ENGINE="$ENGINE" "$DEV_PY" .ci/kserve_check.py onnx "$bundle/colour-classifier/1" \
  && ok "KServe ONNX runtime: every storage shape answers like onnxruntime; deploy/k8s Deployment too" \
  || fail "KServe ONNX runtime or deploy/k8s Deployment"
ENGINE="$ENGINE" "$DEV_PY" .ci/kserve_check.py pmml tests/pmml/data/claims_regression.pmml \
  && ok "KServe PMML runtime: every storage shape answers like pypmml" || fail "KServe PMML runtime"

stage "done"
echo "container: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
