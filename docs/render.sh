#!/usr/bin/env bash
# Regenerates every diagram in docs/ from its Graphviz source.
# Needs `dot` (Debian: apt-get install graphviz). Commit both .dot and .svg.
# Diagrams are laid out top to bottom so that they read at page width: each
# is reported with its size, and one wider than 2.5 times its height is
# flagged (rsvg-convert, from librsvg2-bin, makes a PNG to look at).
set -euo pipefail
cd "$(dirname "$0")"
for src in *.dot; do
    svg="${src%.dot}.svg"
    dot -Tsvg "$src" -o "$svg"
    size=$(grep -o '<svg width="[0-9.]*pt" height="[0-9.]*pt"' "$svg" | tr -dc '0-9. ' | xargs)
    read -r width height <<<"$size"
    echo "rendered $svg: ${width} x ${height} pt"
    if awk -v w="$width" -v h="$height" 'BEGIN { exit !(w > 2.5 * h) }'; then
        echo "  too wide: more than 2.5 times its height" >&2
    fi
done
