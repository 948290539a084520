#!/usr/bin/env bash
# Regenerates docs/dashboard.png: the dashboard on the seed's four-node
# cluster (a manager and three workers in network namespaces), as the
# browser test's headless Chromium sees it after scaling helloworld to 6.
# Needs root, chromium and chromium-driver (Debian), like the test.
set -euo pipefail
cd "$(dirname "$0")/.."
FLOTILLA_DASHBOARD_SCREENSHOT="$PWD/docs/dashboard.png" \
    nice cargo nextest run -p flotilla --test dashboard \
    -E 'test(slow_dashboard_in_a_browser_on_the_seed_cluster)'
echo "wrote docs/dashboard.png"
