#!/usr/bin/env bash
# Create a git-ignored .env for local runs (honcho loads it): a demo merchant with a freshly
# generated sign key, an API token, and the gateway simulator (Procfile.dev) instead of the
# real OTT Pay endpoint. Does nothing if .env exists or OTTPAY_MERCHANTS is already set.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${OTTPAY_MERCHANTS:-}" || -f .env ]]; then
  exit 0
fi
hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n' | tr 'a-f' 'A-F'; }
umask 077
console_password="$(hex 9)"
console_hash="$(printf '%s\n' "$console_password" | .venv/bin/ottrecon hash-password)"
cat > .env <<ENV
# Local rehearsal settings written by scripts/dev_env.sh — never use these in production.
OTTPAY_MERCHANTS=DEMO000001=$(hex 8)
OTTPAY_OPERATORS=DEMO000001=1000000001
OTTRECON_API_TOKENS=dev:$(hex 24)
OTTPAY_BASE_URL=http://127.0.0.1:8090
OTTRECON_CALLBACK_URL=http://127.0.0.1:8080/ottpay/callback
SIM_AUTOPAY=fraction=0.9,delay_s=5
# Finance console at http://127.0.0.1:8081/console/ — user "finance", password ${console_password}
OTTRECON_CONSOLE_USERS='finance:finance:${console_hash}'
OTTRECON_CONSOLE_INSECURE_COOKIES=1
ENV
echo "dev_env: wrote .env (demo merchant DEMO000001, an API token, the simulator as gateway)" >&2
echo "dev_env: finance console http://127.0.0.1:8081/console/ user 'finance' password '${console_password}' (also in .env)" >&2
