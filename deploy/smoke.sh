#!/usr/bin/env bash
# Smoke test of the running compose stack (docker compose up -d --wait, with a dataset in
# ./data/sample): the shard sensor's pipeline run, executed by the code location, succeeds
# and publishes an index; the API then answers an image search from it.
#   bash deploy/smoke.sh            # used by .github/workflows/compose.yml
set -euo pipefail
DAGSTER=${DAGSTER_URL:-http://127.0.0.1:3000}
API=${API_URL:-http://127.0.0.1:8000}
TIMEOUT_S=${SMOKE_TIMEOUT_S:-1200}
API_KEY=${API_KEY:-}   # one of IMGSEARCH_API_KEYS

graphql() {  # query -> JSON answer of the webserver
  python3 -c 'import json,sys; print(json.dumps({"query": sys.argv[1]}))' "$1" |
    curl -fsS -H 'Content-Type: application/json' --data-binary @- "$DAGSTER/graphql"
}

echo "waiting for a full_pipeline run launched by the daemon ..."
deadline=$((SECONDS + TIMEOUT_S))
while :; do
  answer=$(graphql '{ runsOrError(filter: {pipelineName: "full_pipeline"}) {
    ... on Runs { results { runId status tags { key value } } } } }')
  status=$(python3 -c '
import json, sys
runs = json.loads(sys.argv[1])["data"]["runsOrError"]["results"]
done = [r for r in runs if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
print(f"{done[0][\"status\"]} {done[0][\"runId\"]}" if done else "waiting")' "$answer")
  case $status in
    SUCCESS*) echo "run ${status#SUCCESS }: SUCCESS"; break ;;
    FAILURE*|CANCELED*) echo "run failed: $status"; docker compose logs code-location | tail -100; exit 1 ;;
  esac
  if [ $SECONDS -ge $deadline ]; then echo "no finished run after ${TIMEOUT_S}s"; exit 1; fi
  sleep 10
done

echo "waiting for the API to load the published index ..."
until curl -fsS "$API/health"; do
  if [ $SECONDS -ge $deadline ]; then echo; echo "API never loaded an index"; exit 1; fi
  sleep 5
done
echo

# A query picture made inside the image (the host may have no Pillow); never stored.
docker compose exec -T api python -c '
import io, sys
from PIL import Image
buffer = io.BytesIO()
Image.new("RGB", (96, 96), (180, 60, 40)).save(buffer, "JPEG")
sys.stdout.buffer.write(buffer.getvalue())' > "${TMPDIR:-/tmp}/imgsearch-query.jpg"
curl -fsS -H "X-API-Key: $API_KEY" -F "image=@${TMPDIR:-/tmp}/imgsearch-query.jpg;type=image/jpeg" \
  "$API/search?k=5" |
  python3 -c '
import json, sys
answer = json.load(sys.stdin)
assert answer["hits"], answer
print(f"search: {len(answer[\"hits\"])} hits from index {answer[\"index_version\"]}, "
      f"best score {answer[\"hits\"][0][\"score\"]:.3f}")'
echo "smoke test passed"
