#!/usr/bin/env bash
# Regenerates every diagram in docs/ from its Graphviz source.
# Needs `dot` (Debian: apt-get install graphviz). Commit both .dot and .svg.
set -euo pipefail
cd "$(dirname "$0")"
for src in *.dot; do
    dot -Tsvg "$src" -o "${src%.dot}.svg"
    echo "rendered ${src%.dot}.svg"
done
