#!/usr/bin/env bash
# The README test command. Installs the system tools the tests drive for real (when missing),
# then runs every *.test.ts with node's test runner. Nothing is skipped for a missing tool:
# a tool that cannot be installed fails the run here, loudly.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v socat >/dev/null || need+=(socat)                 # serial PTY pairs
[ -x /usr/bin/chromium ] || need+=(chromium)                  # browser tests (playwright-core)
command -v dciodvfy >/dev/null || need+=(dicom3tools)         # DICOM object validation
command -v dcmdump >/dev/null || need+=(dcmtk)                # DICOM dumps (what dciodvfy misses), storescp
command -v Orthanc >/dev/null || need+=(orthanc)              # a real PACS for the DICOMweb tests
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
command -v pdftotext >/dev/null || need+=(poppler-utils)     # invoice PDFs: text and structure checks
command -v qpdf >/dev/null || need+=(qpdf)
command -v unzip >/dev/null || need+=(unzip)               # the lake's zip exports: integrity and contents
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  if [ "$(id -u)" != 0 ]; then echo "need root (or sudo) to apt-get install ${need[*]}" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

[ -d node_modules ] || npm ci

# The browser apps, built once for every test that starts a server (test servers do not build).
node --import tsx scripts/build-viewer.ts

mapfile -t all < <(find protocols sim controller store server streamer archive billing datalake marketplace test \
  -name '*.test.ts' -not -path '*/node_modules/*' 2>/dev/null | sort)
if [ ${#all[@]} -eq 0 ]; then echo "no test files found" >&2; exit 1; fi
# The live-stream and browser end-to-end tests load the CPU (video encoders, software WebGL) and
# run robot sweeps whose safety watchdog aborts on a starved state stream: they run one at a
# time, after the others. So do the plugin sandbox's, which measures kill latency and this
# process's event-loop delay while a plugin spins, the marketplace's (plugins run beside sweeps),
# and the data lake's, whose quality gate counts the frames of 1 s sweeps (a loaded machine
# drops them).
files=(); heavy=()
for f in "${all[@]}"; do
  case "$f" in test/live*.e2e.test.ts|test/browser*.test.ts|test/marketplace*.e2e.test.ts|test/datalake.e2e.test.ts|marketplace/sandbox.test.ts|marketplace/demo.test.ts) heavy+=("$f") ;; *) files+=("$f") ;; esac
done
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Nothing may hang the run: a test without its own timeout gets 10 minutes, a file whose tests
# are done exits even if it leaked a handle (an open peer connection keeps node alive), and each
# phase as a whole is bounded (timeout exits 124 and the run fails).
runner=(node --import tsx --test --test-force-exit --test-timeout=600000 --test-reporter=spec)
set +e
timeout -k 30s 40m "${runner[@]}" --test-concurrency=2 "$@" "${files[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if [ ${#heavy[@]} -gt 0 ]; then
  timeout -k 30s 30m "${runner[@]}" --test-concurrency=1 "$@" "${heavy[@]}" 2>&1 | tee -a "$log"
  rc2=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] && rc=$rc2
fi
[ "$rc" -eq 124 ] && echo "a test phase ran out of time (see above)" >&2
set -e
# One plain closing line for CI, whatever the reporter printed above it.
pass=$(sed -n 's/^ℹ pass \([0-9]*\)$/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
fail=$(sed -n 's/^ℹ fail \([0-9]*\)$/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
# A phase killed by its timeout printed no totals: it counts as a failure.
[ "$rc" -ne 0 ] && [ "$fail" -eq 0 ] && fail=1
echo "${pass} passed, ${fail} failed"
exit "$rc"
