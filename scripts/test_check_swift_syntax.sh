#!/usr/bin/env bash
# Self-test for scripts/check_swift_syntax.py: it must accept valid Swift (including
# UniFFI's `@_documentation(visibility: private)` lines inside `#if swift(>=5.8)` and its
# `let writeReturn = { () }` lines), reject a deleted closing brace and a misspelt keyword,
# and keep rejecting real errors next to the two tolerated constructs.
# Needs `scripts/install-tools.sh swift-parser` first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${SWIFT_PARSER_PY:-$(eval "$(bash "$ROOT/scripts/install-tools.sh" env)"; printf %s "$SWIFT_PARSER_PY")}"
CHECK="$ROOT/scripts/check_swift_syntax.py"
[[ -x "$PY" ]] || { echo "test_check_swift_syntax: $PY missing; run scripts/install-tools.sh swift-parser" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/valid.swift" <<'EOF'
import Foundation

public struct Recording: Equatable {
    public let id: String
    public var durationMs: UInt64

    public init(id: String, durationMs: UInt64) {
        self.id = id
        self.durationMs = durationMs
    }
}

public func totalDuration(_ items: [Recording]) -> UInt64 {
    var total: UInt64 = 0
    for item in items where item.durationMs > 0 {
        total += item.durationMs
    }
    return total
}
EOF

# Same snippet with the closing brace of the `for` loop deleted.
awk 'NR == 17 && $0 == "    }" { next } { print }' "$work/valid.swift" > "$work/missing_brace.swift"
# Same snippet with `func` misspelt.
sed 's/^public func totalDuration/public fucn totalDuration/' "$work/valid.swift" > "$work/typo.swift"

# The shape UniFFI generates, at top level and inside a type.
cat > "$work/uniffi_doc_attr.swift" <<'EOF'
#if swift(>=5.8)
@_documentation(visibility: private)
#endif
public struct FfiConverterString: FfiConverter {
    typealias SwiftType = String

#if swift(>=5.8)
    @_documentation(visibility: private)
#endif
    public static func lift(_ value: RustBuffer) throws -> String {
        return String(bytes: value.data, encoding: .utf8)!
    }
}
EOF

passed=0
failed=0
expect() { # WANTED_EXIT NAME FILE
  local want=$1 name=$2 file=$3 got=0 out
  out=$("$PY" "$CHECK" "$file" 2>&1) || got=$?
  if [[ $got -eq $want ]]; then
    passed=$((passed + 1))
    echo "ok   - $name (exit $got)"
  else
    failed=$((failed + 1))
    echo "FAIL - $name: expected exit $want, got $got"
    printf '%s\n' "$out" | sed 's/^/       /'
  fi
}

# Guard the test itself: the broken variants must really differ from the valid one.
cmp -s "$work/valid.swift" "$work/missing_brace.swift" && { echo "test setup: brace not deleted" >&2; exit 1; }
cmp -s "$work/valid.swift" "$work/typo.swift" && { echo "test setup: keyword not misspelt" >&2; exit 1; }

expect 0 "valid Swift passes" "$work/valid.swift"
expect 1 "deleted closing brace is caught" "$work/missing_brace.swift"
expect 1 "misspelt keyword (fucn) is caught" "$work/typo.swift"
expect 0 "UniFFI @_documentation inside #if swift(>=5.8) passes" "$work/uniffi_doc_attr.swift"
# The workaround must not hide breakage next to it.
sed 's/static func lift/static fucn lift/' "$work/uniffi_doc_attr.swift" > "$work/uniffi_typo.swift"
expect 1 "a typo next to the UniFFI attribute is still caught" "$work/uniffi_typo.swift"

# The shape UniFFI generates in a callback vtable for a method returning nothing.
cat > "$work/uniffi_write_return.swift" <<'EOF'
func vtableEntry(handle: UInt64) {
    let makeCall = {
        () throws -> () in
        try lookUp(handle).onEvent()
    }

    let writeReturn = { () }
    uniffiTraitInterfaceCallWithError(
        makeCall: makeCall,
        writeReturn: writeReturn
    )
}
EOF
expect 0 "UniFFI let writeReturn = { () } passes" "$work/uniffi_write_return.swift"
# A real error on the very next line is still caught (a deleted opening parenthesis).
sed 's/^    uniffiTraitInterfaceCallWithError($/    uniffiTraitInterfaceCallWithError/' "$work/uniffi_write_return.swift" > "$work/uniffi_write_return_broken.swift"
cmp -s "$work/uniffi_write_return.swift" "$work/uniffi_write_return_broken.swift" && { echo "test setup: parenthesis not deleted" >&2; exit 1; }
expect 1 "a missing parenthesis next to writeReturn is still caught" "$work/uniffi_write_return_broken.swift"
# A typo inside the tolerated line itself is not hidden.
sed 's/let writeReturn = { () }/lett writeReturn = { () }/' "$work/uniffi_write_return.swift" > "$work/uniffi_write_return_typo.swift"
expect 1 "a typo in the writeReturn line itself is still caught" "$work/uniffi_write_return_typo.swift"
# Only that exact line is tolerated: the same empty-tuple closure under another name is still
# reported (the grammar gap is real; the workaround is not a general one).
sed 's/let writeReturn = { () }/let otherReturn = { () }/' "$work/uniffi_write_return.swift" > "$work/empty_tuple_elsewhere.swift"
expect 1 "an empty tuple elsewhere is still reported (narrow workaround)" "$work/empty_tuple_elsewhere.swift"

# Directory mode: recursive, fails if any file fails.
mkdir -p "$work/good/sub" "$work/bad/sub"
cp "$work/valid.swift" "$work/good/"
cp "$work/uniffi_doc_attr.swift" "$work/good/sub/"
cp "$work/uniffi_write_return.swift" "$work/good/sub/"
cp "$work/valid.swift" "$work/bad/"
cp "$work/missing_brace.swift" "$work/bad/sub/"
expect 0 "a directory of valid files passes" "$work/good"
expect 1 "a directory with one broken file fails" "$work/bad"

echo "check_swift_syntax: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
