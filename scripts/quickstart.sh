#!/usr/bin/env bash
# Install everything, then start the hub with its embedded worker and default settings:
# data in ./kiln-data, SQLite, listening on 127.0.0.1:8471. Extra arguments go to `kiln serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
exec node bin/kiln.js serve "$@"
