#!/usr/bin/env bash
# Build the documentation site from docs/ into docs/_build/html, with every
# warning an error (a broken link or reference fails the build, as in CI).
source "$(dirname "$0")/bootstrap.sh"

python -m sphinx -W --keep-going -b html docs docs/_build/html "$@"
echo "Open docs/_build/html/index.html"
