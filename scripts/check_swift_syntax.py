#!/usr/bin/env python3
"""Syntax-check Swift sources without a Swift toolchain (tree-sitter-swift).

Usage: check_swift_syntax.py FILE_OR_DIR...

Parses every .swift file given (directories are searched recursively) and prints
each ERROR or MISSING node of the parse tree as `file:line:col: KIND ...` followed by
the offending source line. Exit status: 0 if every file parses cleanly, 1 if any
syntax error was found, 2 on usage errors (missing path, no .swift file found).

This checks syntax only, not types or name resolution.

Needs the pinned `tree-sitter` and `tree-sitter-swift` packages: run
`scripts/install-tools.sh swift-parser`, whose venv's python is $SWIFT_PARSER_PY in
`scripts/install-tools.sh env` (this script re-executes itself with that interpreter
when the packages are not importable from the current one).

Two known grammar gaps are worked around, narrowly. Both rewrites happen in memory
before parsing, keep every byte offset (so every line and column reported is that
of the real file), and touch nothing else:

1. UniFFI's generated Swift marks helper declarations as

       #if swift(>=5.8)
       @_documentation(visibility: private)
       #endif
       public struct FfiConverterString ...

   This is valid Swift (the attribute applies to the declaration after #endif), but
   tree-sitter-swift 0.7 cannot parse an attribute alone inside a conditional-
   compilation block. Only where the attribute is alone on its line, the previous
   line is exactly `#if swift(>=5.8)` and the next line is exactly `#endif`
   (ignoring surrounding whitespace), its `@_` is replaced with `//`, turning the
   line into a comment of the same length.

2. UniFFI's callback-interface vtables (a method returning nothing) contain

       let writeReturn = { () }

   a closure returning the empty tuple: valid Swift, but tree-sitter-swift 0.7 has
   no empty-tuple expression (`()` as a value fails everywhere: `let x = ()`,
   `return ()`, `f(())`; `()` as a type parses). Only on a line that is exactly
   `let writeReturn = { () }` (ignoring surrounding whitespace), the `()` is
   replaced with two spaces, giving `{    }`: an empty closure, which Swift treats
   exactly like `{ () }`. An empty tuple anywhere else is still reported.
"""

import os
import shlex
import subprocess
import sys
from pathlib import Path

DOC_ATTRIBUTE = b"@_documentation(visibility: private)"
IF_SWIFT_58 = b"#if swift(>=5.8)"
ENDIF = b"#endif"
WRITE_RETURN_VOID = b"let writeReturn = { () }"


def _pinned_python() -> Path:
    """The pinned venv's python: $SWIFT_PARSER_PY, else where scripts/install-tools.sh puts it."""
    if os.environ.get("SWIFT_PARSER_PY"):
        return Path(os.environ["SWIFT_PARSER_PY"])
    script = Path(__file__).resolve().parent / "install-tools.sh"
    try:
        env = subprocess.run(["bash", str(script), "env"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return Path("/nonexistent")
    for line in env.splitlines():
        if line.startswith("export SWIFT_PARSER_PY="):
            return Path(shlex.split(line.split("=", 1)[1])[0])
    return Path("/nonexistent")


def _reexec_with_tools_python() -> None:
    """Fall back to the pinned venv (scripts/install-tools.sh swift-parser) when tree_sitter is not importable."""
    tools_python = _pinned_python()
    if tools_python.is_file() and Path(sys.executable).absolute() != tools_python.absolute():
        os.execv(str(tools_python), [str(tools_python), __file__, *sys.argv[1:]])
    sys.stderr.write(
        "check_swift_syntax: cannot import tree_sitter / tree_sitter_swift; "
        "run scripts/install-tools.sh swift-parser\n"
    )
    sys.exit(2)


try:
    import tree_sitter_swift
    from tree_sitter import Language, Parser
except ImportError:
    _reexec_with_tools_python()


def neutralize_uniffi_doc_attributes(source: bytes) -> bytes:
    """Comment out UniFFI's lone `@_documentation(visibility: private)` lines that sit
    directly between `#if swift(>=5.8)` and `#endif`, keeping the byte length."""
    lines = source.split(b"\n")
    for i in range(1, len(lines) - 1):
        line = lines[i]
        if (
            line.strip() == DOC_ATTRIBUTE
            and lines[i - 1].strip() == IF_SWIFT_58
            and lines[i + 1].strip() == ENDIF
        ):
            lines[i] = line.replace(b"@_", b"//", 1)
    return b"\n".join(lines)


def neutralize_uniffi_void_write_return(source: bytes) -> bytes:
    """Turn UniFFI's `let writeReturn = { () }` lines (exactly that, alone on the line) into
    the equivalent empty closure `{    }`, keeping the byte length."""
    lines = source.split(b"\n")
    for i, line in enumerate(lines):
        if line.strip() == WRITE_RETURN_VOID:
            lines[i] = line.replace(b"{ () }", b"{    }", 1)
    return b"\n".join(lines)


def neutralize_known_grammar_gaps(source: bytes) -> bytes:
    """Both narrow, length-preserving rewrites described in the module docstring."""
    return neutralize_uniffi_void_write_return(neutralize_uniffi_doc_attributes(source))


def iter_problem_nodes(node):
    """Yield every ERROR and MISSING node, descending only into subtrees with errors."""
    stack = [node]
    while stack:
        current = stack.pop()
        if current.is_error or current.is_missing:
            yield current
        if current.has_error:
            stack.extend(reversed(current.children))


def check_file(parser, path: Path) -> int:
    source = path.read_bytes()
    tree = parser.parse(neutralize_known_grammar_gaps(source))
    if not tree.root_node.has_error:
        return 0
    lines = source.split(b"\n")
    # Nested ERROR nodes can share a span: report each span once.
    unique = {}
    for node in iter_problem_nodes(tree.root_node):
        unique.setdefault((node.start_byte, node.end_byte, node.is_missing, node.type), node)
    problems = sorted(unique.values(), key=lambda n: (n.start_point, n.end_byte))
    for node in problems:
        row, col = node.start_point
        if node.is_missing:
            what = f"MISSING {node.type!r}"
        else:
            snippet = source[node.start_byte : node.end_byte].decode("utf-8", "replace")
            snippet = " ".join(snippet.split())
            if len(snippet) > 60:
                snippet = snippet[:57] + "..."
            what = f"ERROR near {snippet!r}"
        text = lines[row].decode("utf-8", "replace") if row < len(lines) else ""
        print(f"{path}:{row + 1}:{col + 1}: {what}")
        print(f"    {text}")
    # A tree can report has_error without a visible ERROR/MISSING node; still a failure.
    return max(len(problems), 1)


def collect(args):
    files = []
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*.swift") if f.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            sys.stderr.write(f"check_swift_syntax: no such file or directory: {arg}\n")
            sys.exit(2)
    return files


def main(argv) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        sys.stderr.write(__doc__)
        return 2
    files = collect(argv)
    if not files:
        sys.stderr.write("check_swift_syntax: no .swift files found in: " + " ".join(argv) + "\n")
        return 2
    parser = Parser(Language(tree_sitter_swift.language()))
    bad_files = 0
    problems = 0
    for path in files:
        n = check_file(parser, path)
        if n:
            bad_files += 1
            problems += n
    status = "FAILED" if bad_files else "ok"
    sys.stderr.write(
        f"check_swift_syntax: {status}: {len(files)} file(s), "
        f"{bad_files} with syntax errors ({problems} problem node(s))\n"
    )
    return 1 if bad_files else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
