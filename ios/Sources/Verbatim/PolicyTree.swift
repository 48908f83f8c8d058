import CoreFoundation
import Foundation
import os
import VerbatimFFI

/// Turns a managed configuration (the `com.apple.configuration.managed` dictionary: property
/// list types) into the neutral tree the Rust core validates.
///
/// Conversion only, no validation: every value keeps its type when the tree has one for it, so
/// the core can name the key of any mistake (a number where a list belongs, a fraction where an
/// integer belongs). A real passes as `.real`, unchanged: the core alone decides (a whole real
/// is accepted where an integer belongs, a fraction is refused by key), the same rule as on
/// Android and in `verbatim policy check`. The shared table
/// `core/tests/data/policy-value-conversions.json` is run against this code by the XCTest suite.
///
/// | property list                | `PolicyValue`                                   |
/// |------------------------------|-------------------------------------------------|
/// | string                       | `.text`                                         |
/// | `<true/>` / `<false/>`       | `.bool` (an `NSNumber` that is a `CFBoolean`)   |
/// | `<integer>`                  | `.integer` (beyond `Int64`: `.text`, rejected by key) |
/// | `<real>`                     | `.real` (the core accepts a whole number, rejects the rest by key) |
/// | array                        | `.items` (unsupported elements left out)        |
/// | dictionary                   | `.dict` (unsupported values left out)           |
/// | `<date>`, `<data>`, other    | left out, its key path logged (never its value) |
///
/// Booleans: property-list booleans arrive as `NSNumber`, and `NSNumber(value: 1) as? Bool`
/// succeeds, so the type is told by `CFBooleanGetTypeID()`, never by casting.
public enum PolicyTree {
    private static let log = Logger(subsystem: OSLogSink.defaultSubsystem, category: "config")

    /// The whole configuration as a `.dict`; unsupported values are left out and their key
    /// paths logged.
    public static func from(_ configuration: [String: Any]) -> PolicyValue {
        let (tree, skipped) = convert(configuration)
        for path in skipped {
            log.warning("managed configuration: \(path, privacy: .public) has a type the agent does not take (date, data); left out")
        }
        return tree
    }

    /// As `from(_:)`, without logging: the tree and the key paths left out (`a.b[2]`).
    public static func convert(_ configuration: [String: Any]) -> (tree: PolicyValue, skipped: [String]) {
        var skipped: [String] = []
        let tree = PolicyValue.dict(entries: entries(configuration, path: "", skipped: &skipped))
        return (tree, skipped)
    }

    /// One value; nil when its type is not supported.
    public static func value(_ raw: Any) -> PolicyValue? {
        var skipped: [String] = []
        return value(raw, path: "", skipped: &skipped)
    }

    private static func value(_ raw: Any, path: String, skipped: inout [String]) -> PolicyValue? {
        switch raw {
        case let tree as PolicyValue:
            return tree
        case let text as String:
            return .text(value: text)
        case let number as NSNumber:
            return numberValue(number)
        case let list as [Any]:
            var items: [PolicyValue] = []
            for (index, element) in list.enumerated() {
                if let item = value(element, path: "\(path)[\(index)]", skipped: &skipped) {
                    items.append(item)
                }
            }
            return .items(items: items)
        case let dictionary as [String: Any]:
            return .dict(entries: entries(dictionary, path: path, skipped: &skipped))
        default:
            skipped.append(path.isEmpty ? "(value)" : path)
            return nil
        }
    }

    private static func numberValue(_ number: NSNumber) -> PolicyValue {
        if CFGetTypeID(number) == CFBooleanGetTypeID() {
            return .bool(value: number.boolValue)
        }
        if CFNumberIsFloatType(number as CFNumber) {
            return .real(value: number.doubleValue)
        }
        // An unsigned value beyond Int64 would wrap: pass its text, the core rejects it by key.
        if String(cString: number.objCType) == "Q", number.uint64Value > UInt64(Int64.max) {
            return .text(value: number.stringValue)
        }
        return .integer(value: number.int64Value)
    }

    private static func entries(
        _ dictionary: [String: Any],
        path: String,
        skipped: inout [String]
    ) -> [String: PolicyValue] {
        var out: [String: PolicyValue] = [:]
        for (key, raw) in dictionary {
            if let converted = value(raw, path: path.isEmpty ? key : "\(path).\(key)", skipped: &skipped) {
                out[key] = converted
            }
        }
        return out
    }
}
