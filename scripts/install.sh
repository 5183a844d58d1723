#!/usr/bin/env bash
# Installs what Kiln needs on a Debian machine: the Debian tools it drives and its npm packages,
# then builds it. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# aptly only for `npm run bench` (bench/publish.js compares publishing with it); it installs in seconds.
# chromium only for the web UI's browser tests (playwright-core drives it; no browser download).
DEBS=(bubblewrap dpkg-dev debhelper fakeroot build-essential gpg gpgv apt xz-utils aptly chromium debootstrap zstd)
missing=()
for pkg in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]} > 0)); then
  echo "kiln: installing Debian packages: ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "kiln: Node.js 20 or newer is needed (apt-get install nodejs, or from nodesource)" >&2
  exit 1
fi

# npm ci only when the lock file changed since the last install (better-sqlite3 builds from source).
stamp=node_modules/.kiln-lock-hash
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "kiln: installing npm packages (native modules build from source; this takes a few minutes)" >&2
  # `npm install`, not `npm ci`: npm 11 writes lock files that list only this platform's optional
  # packages (rollup's), which `npm ci` then refuses as out of sync. The lock still pins versions.
  npm install --no-audit --no-fund
  echo "$want" >"$stamp"
else
  npm run --silent build
fi
