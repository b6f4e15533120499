#!/usr/bin/env bash
# Create a git-ignored .env for local runs (honcho loads it) with a demo merchant and a
# freshly generated sign key, unless .env exists or OTTPAY_MERCHANTS is already set.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${OTTPAY_MERCHANTS:-}" || -f .env ]]; then
  exit 0
fi
key="$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n' | tr 'a-f' 'A-F')"
umask 077
printf 'OTTPAY_MERCHANTS=DEMO000001=%s\n' "$key" > .env
echo "dev_env: wrote .env with demo merchant DEMO000001 and a random sign key (local use only)" >&2
