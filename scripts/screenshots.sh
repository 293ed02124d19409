#!/usr/bin/env bash
# Refresh the documentation's screenshots in docs/screenshots/: the browser test
# (tests/admin/test_admin_browser.py: Chromium, a live server, a real worker) saves
# them there instead of in a temporary folder. Needs /usr/bin/chromium
# (apt-get install chromium).
source "$(dirname "$0")/bootstrap.sh"

export SCREENSHOTS_DIR="$PWD/docs/screenshots"
export REQUIRE_BROWSER_TESTS=1
./scripts/test.sh tests/admin/test_admin_browser.py "$@"
echo "Screenshots saved in $SCREENSHOTS_DIR"
