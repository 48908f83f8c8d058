#!/usr/bin/env python3
"""Check the iOS package's privacy manifest (PrivacyInfo.xcprivacy) without Xcode.

Usage: check_privacy_manifest.py --plist FILE [--package Package.swift]... [--symbols NM_OUT]

Checks, printing one line per problem (exit 1 if any, 2 on usage errors):

1. The plist parses and has exactly the four top-level keys of a privacy manifest, typed as
   Apple documents them: NSPrivacyTracking (false: the agent never tracks),
   NSPrivacyTrackingDomains (an empty array), NSPrivacyAccessedAPITypes and
   NSPrivacyCollectedDataTypes (arrays of dictionaries with exactly their documented keys).
2. Every required-reason category is one Apple defines, declared once, with reasons from that
   category's approved codes (a code of another category is refused), and the declarations
   are exactly what the package needs (EXPECTED_REASONS, explained in ios/README.md "Privacy
   manifest"): adding or dropping one is a decision, made here and in the README together.
3. Every collected data type is one Apple defines, declared once, not used for tracking,
   with a boolean Linked and at least one known purpose.
4. Each --package manifest lists the privacy manifest in the `resources:` of the target whose
   directory holds it (`.copy` or `.process`), so SwiftPM bundles it.
5. With --symbols (the output of `nm -u` or `nm -m` over the static libraries, on a Mac: see
   scripts/release-ios.sh), every required-reason API the binary imports falls in a declared
   category, which is how App Store Connect's upload scan judges it.
"""

import argparse
import plistlib
import re
import sys
from pathlib import Path

# Apple's approved reason codes per category ("Describing use of required reason API").
APPROVED_REASONS = {
    "NSPrivacyAccessedAPICategoryFileTimestamp": {"DDA9.1", "C617.1", "3B52.1", "0A2A.1"},
    "NSPrivacyAccessedAPICategorySystemBootTime": {"35F9.1", "8FFB.1", "3D61.1"},
    "NSPrivacyAccessedAPICategoryDiskSpace": {"85F4.1", "E174.1", "7D9E.1", "B728.1"},
    "NSPrivacyAccessedAPICategoryActiveKeyboards": {"3EC4.1", "54BD.1"},
    "NSPrivacyAccessedAPICategoryUserDefaults": {"CA92.1", "1C8F.1", "C56D.1", "AC6B.1"},
}

# What this package declares, and why (ios/README.md, "Privacy manifest"):
#   UserDefaults AC6B.1: reading com.apple.configuration.managed, writing
#     com.apple.feedback.managed (the MDM's managed configuration and feedback), nothing else;
#   FileTimestamp C617.1: SQLite's and the core's stat/fstat/lstat on files of the agent's
#     data directory, inside the app container;
#   DiskSpace E174.1: SQLite's statfs/fstatfs on Apple platforms when it opens a database to
#     write to it.
EXPECTED_REASONS = {
    "NSPrivacyAccessedAPICategoryUserDefaults": {"AC6B.1"},
    "NSPrivacyAccessedAPICategoryFileTimestamp": {"C617.1"},
    "NSPrivacyAccessedAPICategoryDiskSpace": {"E174.1"},
}

# Symbols of Apple's required-reason APIs (C spellings, as `nm` shows them without the leading
# underscore; Foundation's NSUserDefaults is an Objective-C class).
API_SYMBOLS = {
    "NSPrivacyAccessedAPICategoryFileTimestamp": {
        "stat", "fstat", "lstat", "fstatat", "getattrlist", "fgetattrlist", "getattrlistat",
        "getattrlistbulk", "stat64", "fstat64", "lstat64", "fstatat64",
    },
    "NSPrivacyAccessedAPICategorySystemBootTime": {"mach_absolute_time"},
    "NSPrivacyAccessedAPICategoryDiskSpace": {
        "statfs", "statvfs", "fstatfs", "fstatvfs", "statfs64", "fstatfs64",
    },
    "NSPrivacyAccessedAPICategoryUserDefaults": {"OBJC_CLASS_$_NSUserDefaults"},
}

TOP_LEVEL = {
    "NSPrivacyTracking": bool,
    "NSPrivacyTrackingDomains": list,
    "NSPrivacyAccessedAPITypes": list,
    "NSPrivacyCollectedDataTypes": list,
}

DATA_TYPES = {
    "NSPrivacyCollectedDataType" + name
    for name in (
        "Name EmailAddress PhoneNumber PhysicalAddress OtherUserContactInfo Health Fitness "
        "PaymentInfo CreditInfo OtherFinancialInfo PreciseLocation CoarseLocation "
        "SensitiveInfo Contacts EmailsOrTextMessages PhotosorVideos AudioData GameplayContent "
        "CustomerSupport OtherUserContent BrowsingHistory SearchHistory UserID DeviceID "
        "PurchaseHistory ProductInteraction AdvertisingData OtherUsageData CrashData "
        "PerformanceData OtherDiagnosticData EnvironmentScanning Hands Head OtherDataTypes"
    ).split()
}

PURPOSES = {
    "NSPrivacyCollectedDataTypePurpose" + name
    for name in (
        "ThirdPartyAdvertising DeveloperAdvertising Analytics ProductPersonalization "
        "AppFunctionality OtherPurposes"
    ).split()
}

DATA_TYPE_KEYS = {
    "NSPrivacyCollectedDataType": str,
    "NSPrivacyCollectedDataTypeLinked": bool,
    "NSPrivacyCollectedDataTypeTracking": bool,
    "NSPrivacyCollectedDataTypePurposes": list,
}


def check_plist(manifest: dict) -> list:
    problems = []
    keys = set(manifest)
    for key in sorted(keys - set(TOP_LEVEL)):
        problems.append(f"unknown top-level key {key}")
    for key, kind in TOP_LEVEL.items():
        if key not in manifest:
            problems.append(f"{key} is missing")
        elif type(manifest[key]) is not kind:
            problems.append(f"{key} must be a {kind.__name__}, is a {type(manifest[key]).__name__}")
    if manifest.get("NSPrivacyTracking") is not False:
        problems.append("NSPrivacyTracking must be false: the agent does not track")
    if manifest.get("NSPrivacyTrackingDomains"):
        problems.append("NSPrivacyTrackingDomains must be empty: the agent does not track")

    declared = {}
    for i, entry in enumerate(manifest.get("NSPrivacyAccessedAPITypes") or []):
        where = f"NSPrivacyAccessedAPITypes[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} must be a dictionary")
            continue
        extra = set(entry) - {"NSPrivacyAccessedAPIType", "NSPrivacyAccessedAPITypeReasons"}
        if extra:
            problems.append(f"{where}: unknown keys {sorted(extra)}")
        category = entry.get("NSPrivacyAccessedAPIType")
        reasons = entry.get("NSPrivacyAccessedAPITypeReasons")
        if category not in APPROVED_REASONS:
            problems.append(f"{where}: unknown category {category!r}")
            continue
        if category in declared:
            problems.append(f"{where}: {category} declared twice")
        if not isinstance(reasons, list) or not reasons or not all(isinstance(r, str) for r in reasons):
            problems.append(f"{where}: NSPrivacyAccessedAPITypeReasons must be a non-empty array of strings")
            continue
        for reason in reasons:
            if reason not in APPROVED_REASONS[category]:
                problems.append(f"{where}: {reason} is not an approved reason of {category}")
        declared[category] = set(reasons)
    if declared.keys() == EXPECTED_REASONS.keys():
        for category, reasons in EXPECTED_REASONS.items():
            if declared[category] != reasons:
                problems.append(f"{category}: declares {sorted(declared[category])}, the package needs {sorted(reasons)}")
    else:
        problems.append(f"declared categories {sorted(declared)}; the package needs {sorted(EXPECTED_REASONS)}")

    seen = set()
    for i, entry in enumerate(manifest.get("NSPrivacyCollectedDataTypes") or []):
        where = f"NSPrivacyCollectedDataTypes[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} must be a dictionary")
            continue
        if set(entry) != set(DATA_TYPE_KEYS):
            problems.append(f"{where}: keys must be exactly {sorted(DATA_TYPE_KEYS)}")
        for key, kind in DATA_TYPE_KEYS.items():
            if key in entry and type(entry[key]) is not kind:
                problems.append(f"{where}: {key} must be a {kind.__name__}")
        kind = entry.get("NSPrivacyCollectedDataType")
        if kind not in DATA_TYPES:
            problems.append(f"{where}: unknown data type {kind!r}")
        elif kind in seen:
            problems.append(f"{where}: {kind} declared twice")
        seen.add(kind)
        if entry.get("NSPrivacyCollectedDataTypeTracking") is not False:
            problems.append(f"{where}: NSPrivacyCollectedDataTypeTracking must be false")
        purposes = entry.get("NSPrivacyCollectedDataTypePurposes")
        if not isinstance(purposes, list) or not purposes:
            problems.append(f"{where}: NSPrivacyCollectedDataTypePurposes must be a non-empty array")
        else:
            for purpose in purposes:
                if purpose not in PURPOSES:
                    problems.append(f"{where}: unknown purpose {purpose!r}")
    return problems


def _target_calls(source: str):
    """Yields the text of each `.target(...)` call (balanced parentheses, strings skipped)."""
    for match in re.finditer(r"\.target\(", source):
        depth, i, in_string = 0, match.end() - 1, False
        while i < len(source):
            c = source[i]
            if in_string:
                if c == "\\":
                    i += 1
                elif c == '"':
                    in_string = False
            elif c == '"':
                in_string = True
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth == 0:
                    yield source[match.start() : i + 1]
                    break
            i += 1


def check_package(package: Path, plist: Path) -> list:
    """The target whose directory holds `plist` lists it as a resource."""
    source = re.sub(r"//[^\n]*", "", package.read_text(encoding="utf-8"))
    root = package.resolve().parent
    for call in _target_calls(source):
        path = re.search(r'\bpath:\s*"([^"]*)"', call)
        if not path or (root / path.group(1)).resolve() != plist.resolve().parent:
            continue
        resources = re.search(r"\bresources:\s*\[(.*?)\]", call, re.S)
        listed = resources and re.search(
            r'\.(copy|process)\(\s*"' + re.escape(plist.name) + r'"\s*\)', resources.group(1)
        )
        if listed:
            return []
        return [f"{package}: the target at {path.group(1)} does not list {plist.name} in resources:"]
    return [f"{package}: no target has the directory of {plist} as its path"]


def check_symbols(manifest: dict, nm_output: str) -> list:
    declared = {
        e.get("NSPrivacyAccessedAPIType")
        for e in manifest.get("NSPrivacyAccessedAPITypes") or []
        if isinstance(e, dict)
    }
    imported = set()
    for line in nm_output.splitlines():
        # `nm -u`: "_fstat"; `nm`: "                 U _fstat"; `nm -m`: "(undefined) external _fstat (from libSystem)"
        for word in line.split():
            name = word[1:] if word.startswith("_") else word
            # x86_64 (the simulator slice) links the 64-bit-inode variants: _fstat$INODE64.
            if not name.startswith("OBJC_CLASS_$_"):
                name = name.split("$", 1)[0]
            imported.add(name)
    problems = []
    for category, symbols in sorted(API_SYMBOLS.items()):
        used = sorted(imported & symbols)
        if used and category not in declared:
            problems.append(f"the library imports {', '.join(used)} ({category}) but the manifest does not declare it")
    return problems


def main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plist", required=True, type=Path)
    parser.add_argument("--package", action="append", default=[], type=Path)
    parser.add_argument("--symbols", type=Path, help="nm output of the static libraries")
    args = parser.parse_args(argv)
    for path in [args.plist, *args.package, *([args.symbols] if args.symbols else [])]:
        if not path.is_file():
            print(f"{path}: no such file", file=sys.stderr)
            return 2
    try:
        with args.plist.open("rb") as f:
            manifest = plistlib.load(f)
    except Exception as e:  # plistlib raises several types for malformed input
        print(f"{args.plist}: not a property list: {e}")
        return 1
    if not isinstance(manifest, dict):
        print(f"{args.plist}: the top level must be a dictionary")
        return 1
    problems = check_plist(manifest)
    for package in args.package:
        problems += check_package(package, args.plist)
    if args.symbols:
        problems += check_symbols(manifest, args.symbols.read_text(encoding="utf-8", errors="replace"))
    for p in problems:
        print(f"{args.plist}: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
