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

    func testRealsAndHugeIntegersPassAsTextForTheCoreToJudge() {
        XCTAssertEqual(PolicyTree.value(NSNumber(value: 1.5)), .text(value: "1.5"))
        XCTAssertEqual(PolicyTree.value(NSNumber(value: UInt64.max)), .text(value: "18446744073709551615"))
        XCTAssertEqual(PolicyTree.value(NSNumber(value: Int64.max)), .integer(value: Int64.max))
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
