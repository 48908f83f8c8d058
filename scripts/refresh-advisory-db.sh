#!/usr/bin/env bash
# Refresh the RustSec advisory snapshot the supply-chain check reads offline
# (supply-chain/advisory-db/, committed; the RustSec data is CC0, see its LICENSE.txt).
#
# Usage:
#   scripts/refresh-advisory-db.sh [SOURCE]
#     SOURCE  a local checkout of https://github.com/rustsec/advisory-db; without it the
#             script clones that repository (shallow) into a temporary folder.
#
# Only the advisories of crates this project can depend on are kept: every crate named in
# Cargo.lock and fuzz/Cargo.lock, plus `backoff` and `instant`, which the deny self-test
# (scripts/deny.sh --self-test) must see refused. Run it after changing dependencies and
# commit the result; SNAPSHOT records the upstream commit and its date.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/supply-chain/advisory-db"
UPSTREAM=https://github.com/rustsec/advisory-db

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

src=${1:-}
if [[ -z $src ]]; then
  git clone -q --depth 1 "$UPSTREAM" "$work/upstream"
  src="$work/upstream"
fi
[[ -d "$src/crates" ]] || { echo "refresh-advisory-db: $src has no crates/ folder" >&2; exit 2; }

# The snapshot's identity: upstream commit and date (from git, or a SNAPSHOT file beside it).
if git -C "$src" rev-parse -q --verify HEAD >/dev/null 2>&1; then
  snapshot="$(git -C "$src" rev-parse HEAD) $(git -C "$src" log -1 --format=%cs)"
elif [[ -f "$src/SNAPSHOT" ]]; then
  snapshot=$(cat "$src/SNAPSHOT")
else
  echo "refresh-advisory-db: cannot tell which snapshot $src is (no git, no SNAPSHOT)" >&2
  exit 2
fi

names() { # every package name in the lock files, plus the self-test's crates
  local lock
  for lock in "$ROOT/Cargo.lock" "$ROOT/fuzz/Cargo.lock"; do
    [[ -f $lock ]] && sed -n 's/^name = "\(.*\)"$/\1/p' "$lock"
  done
  printf '%s\n' backoff instant
}

rm -rf "$work/out"
mkdir -p "$work/out/crates"
kept=0
while read -r name; do
  if [[ -d "$src/crates/$name" ]]; then
    cp -R "$src/crates/$name" "$work/out/crates/"
    kept=$((kept + 1))
  fi
done < <(names | sort -u)
cp "$src/LICENSE.txt" "$work/out/"
printf '%s\n' "$snapshot" > "$work/out/SNAPSHOT"
chmod -R u+w "$work/out"

rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$work/out" "$DEST"
echo "refresh-advisory-db: snapshot $snapshot; advisories kept for $kept crates ($(find "$DEST/crates" -name '*.md' | wc -l) files)"
