import Foundation
import Verbatim
import XCTest

/// Managed configuration (property-list values) → `PolicyValue`, and the Rust check on top.
final class PolicyTreeTests: XCTestCase {
    func testPlistTypesBecomeTheirTreeTypes() {
        let (tree, skipped) = PolicyTree.convert([
            "text": "hello",
            "int": NSNumber(value: 42),
            "negative": NSNumber(value: -7 as Int64),
            "yes": NSNumber(value: true),
            "no": false as NSNumber,
            "swift_bool": true,
            "swift_int": 1,
            "list": ["a", NSNumber(value: 2), NSNumber(value: false)] as NSArray,
            "nested": ["inner": false, "deeper": ["n": 1]] as NSDictionary,
            "bundles": [["k": "v"]],
        ])
        XCTAssertEqual(skipped, [])
        XCTAssertEqual(
            tree,
            .dict(entries: [
                "text": .text(value: "hello"),
                "int": .integer(value: 42),
                "negative": .integer(value: -7),
                "yes": .bool(value: true),
                "no": .bool(value: false),
                "swift_bool": .bool(value: true),
                "swift_int": .integer(value: 1),
                "list": .items(items: [.text(value: "a"), .integer(value: 2), .bool(value: false)]),
                "nested": .dict(entries: [
                    "inner": .bool(value: false),
                    "deeper": .dict(entries: ["n": .integer(value: 1)]),
                ]),
                "bundles": .items(items: [.dict(entries: ["k": .text(value: "v")])]),
            ])
        )
    }

    /// The trap: `NSNumber(value: 1) as? Bool` is `true`, and a char-typed NSNumber ("c") is
    /// what ObjC's BOOL encodes as; only CFBoolean is a boolean.
    func testNSNumberBooleanIsToldFromIntegerByCFBoolean() {
        XCTAssertEqual(PolicyTree.value(NSNumber(value: 1)), .integer(value: 1))
        XCTAssertEqual(PolicyTree.value(NSNumber(value: 0)), .integer(value: 0))
        XCTAssertEqual(PolicyTree.value(NSNumber(value: Int8(1))), .integer(value: 1))
        XCTAssertEqual(PolicyTree.value(NSNumber(value: true)), .bool(value: true))
        XCTAssertEqual(PolicyTree.value(true as NSNumber), .bool(value: true))
        XCTAssertEqual(PolicyTree.value(NSNumber(value: false)), .bool(value: false))
    }

    func testRealsPassAsRealsAndHugeIntegersAsTextForTheCoreToJudge() {
        XCTAssertEqual(PolicyTree.value(NSNumber(value: 1.5)), .real(value: 1.5))
        XCTAssertEqual(PolicyTree.value(NSNumber(value: 15.0)), .real(value: 15.0))
        XCTAssertEqual(PolicyTree.value(NSNumber(value: UInt64.max)), .text(value: "18446744073709551615"))
        XCTAssertEqual(PolicyTree.value(NSNumber(value: Int64.max)), .integer(value: Int64.max))
    }

    /// The shared table (core/tests/data/policy-value-conversions.json), on this layer: each
    /// case's property-list form, read by Foundation as a managed configuration is, becomes the
    /// table's tree value, and the core gives the table's verdict.
    func testSharedConversionTable() throws {
        let tableURL = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("core/tests/data/policy-value-conversions.json")
        let table = try XCTUnwrap(
            JSONSerialization.jsonObject(with: Data(contentsOf: tableURL)) as? [String: Any]
        )
        let cases = try XCTUnwrap(table["cases"] as? [[String: Any]])
        XCTAssertGreaterThanOrEqual(cases.count, 10)
        let key = "upload_interval_minutes"
        for testCase in cases {
            let name = testCase["name"] as? String ?? "?"
            guard let fragment = testCase["plist"] as? String else { continue }
            let xml = "<plist version=\"1.0\"><dict><key>\(key)</key>\(fragment)</dict></plist>"
            let parsed = try PropertyListSerialization.propertyList(from: Data(xml.utf8), format: nil)
            let config = try XCTUnwrap(parsed as? [String: Any], name)
            let (tree, _) = PolicyTree.convert(config)
            guard case let .dict(entries) = tree else { return XCTFail("\(name): not a dict") }
            XCTAssertEqual(entries[key], expectedTree(testCase["tree"]), "\(name): tree value")

            var full = policy(version: "table")
            full[key] = config[key]
            if config[key] == nil { full.removeValue(forKey: key) }
            let check = try checkPolicy(tree: PolicyTree.from(full))
            if testCase["outcome"] is Int {
                // Accepted (the number itself is checked by the Rust and JVM runs of the table).
                XCTAssertTrue(check.valid, "\(name): \(check.problems)")
            } else {
                let kind = testCase["outcome"] as? String ?? "?"
                XCTAssertFalse(check.valid, name)
                XCTAssertEqual(check.problems.map(\.key), [key], name)
                XCTAssertEqual(String(describing: check.problems.first!.kind).lowercased(), kind.replacingOccurrences(of: "_", with: ""), name)
            }
        }
    }

    private func expectedTree(_ tagged: Any?) -> PolicyValue? {
        guard let object = tagged as? [String: Any], let entry = object.first else { return nil }
        let value = entry.value
        switch entry.key {
        case "integer": return .integer(value: (value as? NSNumber)?.int64Value ?? 0)
        case "real": return .real(value: (value as? NSNumber)?.doubleValue ?? .nan)
        case "text": return .text(value: value as? String ?? "")
        case "bool": return .bool(value: (value as? NSNumber)?.boolValue ?? false)
        default: return nil
        }
    }

    func testDatesAndDataAreLeftOutByKeyPath() {
        let (tree, skipped) = PolicyTree.convert([
            "when": Date(),
            "blob": Data([1, 2, 3]),
            "list": ["keep", Date()] as [Any],
            "nested": ["blob": Data(), "ok": "yes"] as [String: Any],
        ])
        XCTAssertEqual(Set(skipped), ["when", "blob", "list[1]", "nested.blob"])
        XCTAssertEqual(
            tree,
            .dict(entries: [
                "list": .items(items: [.text(value: "keep")]),
                "nested": .dict(entries: ["ok": .text(value: "yes")]),
            ])
        )
    }

    /// The real path: an MDM's XML plist, parsed by Foundation as UserDefaults would hold it.
    func testAManagedConfigurationPlistConverts() throws {
        let xml = """
        <?xml version="1.0" encoding="UTF-8"?>
        <!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
        <plist version="1.0"><dict>
          <key>fail_closed</key><true/>
          <key>upload_interval_minutes</key><integer>30</integer>
          <key>queue_alert_percent</key><real>80.5</real>
          <key>business_lines</key><array><string>+15550100</string></array>
          <key>pushed_at</key><date>2026-01-01T00:00:00Z</date>
        </dict></plist>
        """
        let parsed = try PropertyListSerialization.propertyList(from: Data(xml.utf8), format: nil)
        let config = try XCTUnwrap(parsed as? [String: Any])
        let (tree, skipped) = PolicyTree.convert(config)
        XCTAssertEqual(skipped, ["pushed_at"])
        XCTAssertEqual(
            tree,
            .dict(entries: [
                "fail_closed": .bool(value: true),
                "upload_interval_minutes": .integer(value: 30),
                "queue_alert_percent": .text(value: "80.5"),
                "business_lines": .items(items: [.text(value: "+15550100")]),
            ])
        )
    }

    func testCheckPolicyNamesEveryProblemByKey() throws {
        XCTAssertTrue(try VerbatimAgent.checkPolicy(policy()).valid)
        let check = try VerbatimAgent.checkPolicy(policy(extra: ["archive_url": "http://archive.example.com", "queue_max_mb": 1]))
        XCTAssertFalse(check.valid)
        let byKey = Dictionary(check.problems.map { ($0.key, $0.kind) }, uniquingKeysWith: { first, _ in first })
        XCTAssertEqual(byKey["archive_url"], .insecureUrl)
        XCTAssertEqual(byKey["queue_max_mb"], .outOfRange)
    }
}
