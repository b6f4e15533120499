#!/usr/bin/env bash
# What `make test` / `make run` need from the machine, checked before anything else runs.
#
#   scripts/prerequisites.sh test   # Python >= 3.11 with venv, PostgreSQL, Redis, Chromium (browser tests)
#   scripts/prerequisites.sh run    # the same without Chromium
#
# Whatever is missing is installed when that is possible (root with apt-get: a fresh CI box or
# a developer's container). Otherwise the script stops at once, exit 1, with one message naming
# every package to install, so a fresh clone never half-runs a suite that cannot pass.
# PostgreSQL and Redis count as present when scripts/local_services.sh can use or start them
# (DATABASE_URL / REDIS_URL, a server on the standard port, or the installed server binaries).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MODE="${1:-}"
PYTHON="${PYTHON:-python3}"
[[ "$MODE" == test || "$MODE" == run ]] || { printf 'usage: %s test|run\n' "$0" >&2; exit 2; }

log() { printf 'prerequisites: %s\n' "$*" >&2; }

# Nothing can install a newer Python for us: say so and stop.
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    log "$PYTHON not found: install Python 3.11 or newer (Debian/Ubuntu: apt-get install python3 python3-venv)"
    exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    log "ottrecon needs Python 3.11 or newer; $PYTHON is $("$PYTHON" -V 2>&1): install a newer one or run with PYTHON=python3.12"
    exit 1
fi

# "package|what it is for" for everything missing.
missing=()
# `python -m venv` needs ensurepip, which Debian ships separately in python3-venv.
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || missing+=("python3-venv|the venv module for $PYTHON")
while IFS= read -r package; do
    case "$package" in
        postgresql) missing+=("postgresql|a PostgreSQL server (or set DATABASE_URL)") ;;
        redis-server) missing+=("redis-server|a Redis server (or set REDIS_URL)") ;;
        ?*) missing+=("$package|needed by scripts/local_services.sh") ;;
    esac
done < <("$ROOT/scripts/local_services.sh" needs)
# The browser tests drive the system Chromium found on PATH; Playwright never downloads one.
if [[ "$MODE" == test ]] && ! command -v chromium >/dev/null 2>&1; then
    missing+=("chromium|Chromium for the browser tests (tests/browser)")
fi

[[ ${#missing[@]} -eq 0 ]] && exit 0

packages=()
for entry in "${missing[@]}"; do packages+=("${entry%%|*}"); done

# _OTTRECON_PREREQUISITES_INSTALLED marks the re-check after an install: never install twice.
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1 && [[ -z "${_OTTRECON_PREREQUISITES_INSTALLED:-}" ]]; then
    log "installing ${packages[*]} (apt-get)"
    # Wait for another apt run on the same machine instead of failing on its lock.
    apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${packages[@]}" >/dev/null
    # Check again: an install that did not provide what was missing must not pass silently.
    _OTTRECON_PREREQUISITES_INSTALLED=1 exec "$0" "$MODE"
fi

log "\`make $MODE\` cannot start; this machine is missing:"
for entry in "${missing[@]}"; do log "  - ${entry%%|*}: ${entry#*|}"; done
log "install them (Debian/Ubuntu, as root: apt-get install ${packages[*]}) and run \`make $MODE\` again"
exit 1
