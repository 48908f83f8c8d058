import Foundation
import VerbatimFFI

/// Publishes the agent's health to the MDM: iOS managed app feedback, the dictionary the app
/// writes to its standard `UserDefaults` under `com.apple.feedback.managed`, which the MDM
/// reads with the ManagedApplicationFeedback command.
///
/// The entries (keys, values) are decided in Rust (`VerbatimAgent.feedback()`), the same keys as
/// Android's keyed app states; the contract is docs/mdm-admin.md, "What the agent reports back".
/// This type only writes them: each `verbatim.*` key with its `data`, typed as the table's
/// "iOS type" column says (booleans and integers as property-list booleans and integers, the
/// rest as strings); a key whose data is empty is left out (no `null` in a plist). Keys of the
/// host app (anything not starting with `verbatim.`) are kept; earlier `verbatim.*` keys are
/// replaced.
public struct ManagedFeedback: @unchecked Sendable {
    // @unchecked: UserDefaults is documented thread-safe (not annotated Sendable before iOS 17).
    public static let key = "com.apple.feedback.managed"
    public static let prefix = "verbatim."

    /// The keys docs/mdm-admin.md gives an iOS type other than string.
    static let booleanKeys: Set<String> = ["verbatim.configured", "verbatim.capture_enabled"]
    static let integerKeys: Set<String> = [
        "verbatim.queue_records", "verbatim.queue_percent", "verbatim.oldest_pending_hours",
    ]

    /// Serialises read-modify-write cycles of this process's publishers.
    private static let lock = NSLock()

    private let defaults: UserDefaults

    public init(defaults: UserDefaults = .standard) {
        self.defaults = defaults
    }

    /// Replaces the `verbatim.*` entries of the feedback dictionary with `items`.
    public func publish(_ items: [FeedbackItem]) {
        Self.lock.lock()
        defer { Self.lock.unlock() }
        var feedback = (defaults.dictionary(forKey: Self.key) ?? [:]).filter { !$0.key.hasPrefix(Self.prefix) }
        for (key, value) in Self.values(items) {
            feedback[key] = value
        }
        defaults.set(feedback, forKey: Self.key)
    }

    /// The feedback entries as property-list values (pure).
    public static func values(_ items: [FeedbackItem]) -> [String: Any] {
        var out: [String: Any] = [:]
        for item in items where !item.data.isEmpty {
            if booleanKeys.contains(item.key), let flag = Bool(item.data) {
                out[item.key] = flag
            } else if integerKeys.contains(item.key), let number = Int64(item.data) {
                out[item.key] = NSNumber(value: number)
            } else {
                out[item.key] = item.data
            }
        }
        return out
    }
}
