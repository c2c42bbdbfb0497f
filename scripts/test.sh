#!/usr/bin/env bash
# The README test command. Installs the system tools the tests drive for real (when missing),
# then runs every *.test.ts with node's test runner. Nothing is skipped for a missing tool:
# a tool that cannot be installed fails the run here, loudly.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v socat >/dev/null || need+=(socat)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  if [ "$(id -u)" != 0 ]; then echo "need root (or sudo) to apt-get install ${need[*]}" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

[ -d node_modules ] || npm ci

mapfile -t files < <(find protocols sim controller store server streamer archive billing datalake marketplace test \
  -name '*.test.ts' -not -path '*/node_modules/*' 2>/dev/null | sort)
if [ ${#files[@]} -eq 0 ]; then echo "no test files found" >&2; exit 1; fi
exec node --import tsx --test --test-concurrency=2 --test-reporter=spec "$@" "${files[@]}"
