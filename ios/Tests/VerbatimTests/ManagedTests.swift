import Foundation
@testable import Verbatim
import XCTest

/// The MDM side: managed configuration in, feedback out (each test on its own defaults suite).
final class ManagedTests: XCTestCase {
    private var suites: [String] = []

    override func tearDown() {
        for name in suites {
            UserDefaults().removePersistentDomain(forName: name)
        }
        suites = []
        super.tearDown()
    }

    private func defaults() -> UserDefaults {
        let (defaults, name) = scratchDefaults("managed")
        suites.append(name)
        return defaults
    }

    // MARK: Managed configuration

    func testNoConfigurationMeansNoTree() {
        let configuration = ManagedConfiguration(defaults: defaults())
        XCTAssertNil(configuration.dictionary())
        XCTAssertNil(configuration.tree())
    }

    /// An emptied configuration counts as removed, as an empty restrictions Bundle on Android.
    func testAnEmptyConfigurationIsNone() {
        let store = defaults()
        store.set([String: Any](), forKey: ManagedConfiguration.key)
        XCTAssertNil(ManagedConfiguration(defaults: store).dictionary())
        XCTAssertNil(ManagedConfiguration(defaults: store).tree())
    }

    /// What ManagedAgent does when the MDM removes the configuration: the policy is withdrawn
    /// (recorded once), capture fails closed, nothing queued is deleted and uploads stay
    /// booked; the same configuration pushed again resumes capture.
    func testRemovingTheConfigurationWithdrawsThePolicyUntilOneIsPushedAgain() async throws {
        let agent = try await openAgent()
        let pushed = policy(version: "w-1")
        _ = try await agent.applyPolicy(pushed)
        _ = try await agent.capture(message("before"))
        let queued = try agent.status().queueRecords

        let withdrawn = try await agent.withdrawPolicy()
        XCTAssertTrue(withdrawn)
        let status = try agent.status()
        XCTAssertFalse(status.configured)
        XCTAssertFalse(status.captureEnabled)
        XCTAssertTrue(status.unavailable.contains("policy_withdrawn"), "\(status.unavailable)")
        // The policy_withdrawn event joined the queue; nothing was deleted.
        XCTAssertGreaterThan(status.queueRecords, queued)
        // Still uploading what is queued, under the withdrawn policy's settings.
        XCTAssertNotNil(status.uploadSchedule)
        await assertThrowsAsync({ try await agent.capture(message("after")) }) { error in
            guard case .NotConfigured = error as? VerbatimError else {
                return XCTFail("expected NotConfigured, got \(error)")
            }
        }
        // Once: a second removal seen (another activation) records nothing.
        let again = try await agent.withdrawPolicy()
        XCTAssertFalse(again)

        _ = try await agent.applyPolicy(pushed)
        XCTAssertTrue(try agent.status().captureEnabled)
        guard case .captured = try await agent.capture(message("resumed")) else {
            return XCTFail("capture did not resume")
        }
        try await agent.shutdown()
    }

    /// First launch, no configuration ever: nothing to withdraw, nothing recorded.
    func testWithdrawingWithoutAPolicyRecordsNothing() async throws {
        let agent = try await openAgent()
        let before = try agent.status().queueRecords
        let withdrawn = try await agent.withdrawPolicy()
        XCTAssertFalse(withdrawn)
        XCTAssertEqual(try agent.status().queueRecords, before)
        try await agent.shutdown()
    }

    func testConfigurationIsReadAsATree() {
        let store = defaults()
        let pushed: [String: Any] = ["fail_closed": true, "upload_interval_minutes": 30, "business_lines": ["+15550100"]]
        store.set(pushed, forKey: ManagedConfiguration.key)
        XCTAssertEqual(
            ManagedConfiguration(defaults: store).tree(),
            .dict(entries: [
                "fail_closed": .bool(value: true),
                "upload_interval_minutes": .integer(value: 30),
                "business_lines": .items(items: [.text(value: "+15550100")]),
            ])
        )
    }

    /// Other defaults writes (the agent's own feedback, the host app's keys) post the same
    /// notification: no call.
    func testObservationIgnoresOtherWrites() {
        let store = defaults()
        store.set(["policy_version": "v1"], forKey: ManagedConfiguration.key)
        let called = expectation(description: "no call for unrelated writes")
        called.isInverted = true
        let observation = ManagedConfiguration(defaults: store).observe(debounce: 0.1) {
            called.fulfill()
        }
        store.set(["verbatim.configured": true], forKey: ManagedFeedback.key)
        store.set("x", forKey: "host.app.key")
        store.set(["policy_version": "v1"], forKey: ManagedConfiguration.key) // same value again
        wait(for: [called], timeout: 1)
        observation.cancel()
    }

    /// A burst of changes: one call, after the quiet time.
    func testObservationIsDebounced() {
        let store = defaults()
        store.set(["policy_version": "v1"], forKey: ManagedConfiguration.key)
        let changed = expectation(description: "one call for a burst")
        changed.assertForOverFulfill = true
        let observation = ManagedConfiguration(defaults: store).observe(debounce: 0.3) {
            changed.fulfill()
        }
        store.set(["policy_version": "v2"], forKey: ManagedConfiguration.key)
        store.set(["policy_version": "v3"], forKey: ManagedConfiguration.key)
        wait(for: [changed], timeout: 5)
        // Let a second (wrong) call arrive if there were one.
        let settle = expectation(description: "settle")
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.6) { settle.fulfill() }
        wait(for: [settle], timeout: 2)
        observation.cancel()
    }

    /// A Bool that became an Int is a change, though NSNumber(true) isEqual NSNumber(1).
    func testObservationSeesABoolBecomingAnInt() {
        let store = defaults()
        store.set(["fail_closed": true], forKey: ManagedConfiguration.key)
        let changed = expectation(description: "bool became int")
        let observation = ManagedConfiguration(defaults: store).observe(debounce: 0.1) {
            changed.fulfill()
        }
        store.set(["fail_closed": 1], forKey: ManagedConfiguration.key)
        wait(for: [changed], timeout: 5)
        observation.cancel()
    }

    /// Configuration arriving after first launch: nothing, then a tree.
    func testConfigurationArrivingLaterIsSeen() {
        let store = defaults()
        let configuration = ManagedConfiguration(defaults: store)
        XCTAssertNil(configuration.tree())
        let arrived = expectation(description: "configuration arrived")
        let observation = configuration.observe(debounce: 0.1) {
            arrived.fulfill()
        }
        store.set(policy(), forKey: ManagedConfiguration.key)
        wait(for: [arrived], timeout: 5)
        XCTAssertNotNil(configuration.tree())
        observation.cancel()
    }

    func testNoCallAfterCancel() {
        let store = defaults()
        let called = expectation(description: "no call after cancel")
        called.isInverted = true
        let observation = ManagedConfiguration(defaults: store).observe(debounce: 0.1) {
            called.fulfill()
        }
        observation.cancel()
        store.set(["policy_version": "v9"], forKey: ManagedConfiguration.key)
        wait(for: [called], timeout: 1)
    }

    // MARK: Feedback

    func testFeedbackValuesAreTypedAsDocumented() {
        let values = ManagedFeedback.values([
            FeedbackItem(key: "verbatim.configured", severity: .info, message: "configured", data: "true"),
            FeedbackItem(key: "verbatim.capture_enabled", severity: .error, message: "capture refused", data: "false"),
            FeedbackItem(key: "verbatim.queue_records", severity: .info, message: "3 records", data: "3"),
            FeedbackItem(key: "verbatim.queue_percent", severity: .info, message: "queue 0% full", data: "0"),
            FeedbackItem(key: "verbatim.oldest_pending_hours", severity: .info, message: "none", data: ""),
            FeedbackItem(key: "verbatim.policy_version", severity: .info, message: "policy 42", data: "42"),
            FeedbackItem(key: "verbatim.last_error", severity: .info, message: "no upload error", data: ""),
        ])
        XCTAssertEqual(values["verbatim.configured"] as? Bool, true)
        XCTAssertEqual(values["verbatim.capture_enabled"] as? Bool, false)
        XCTAssertEqual((values["verbatim.queue_records"] as? NSNumber)?.int64Value, 3)
        XCTAssertEqual((values["verbatim.queue_percent"] as? NSNumber)?.int64Value, 0)
        // A version is a string even when it looks like a number.
        XCTAssertEqual(values["verbatim.policy_version"] as? String, "42")
        // Empty data: the key is left out (no null in a plist).
        XCTAssertNil(values["verbatim.oldest_pending_hours"])
        XCTAssertNil(values["verbatim.last_error"])
    }

    func testFeedbackDictionaryIsWrittenAndKeepsTheHostAppsKeys() async throws {
        let store = defaults()
        store.set(["host.app.status": "fine", "verbatim.stale_key": "old"], forKey: ManagedFeedback.key)
        let agent = try await openAgent()
        _ = try await agent.applyPolicy(policy(version: "fb-1"))
        _ = try await agent.capture(message("fb"))

        ManagedFeedback(defaults: store).publish(try agent.feedback())

        let written = try XCTUnwrap(store.dictionary(forKey: ManagedFeedback.key))
        XCTAssertEqual(written["host.app.status"] as? String, "fine")
        XCTAssertNil(written["verbatim.stale_key"])
        XCTAssertEqual(written["verbatim.configured"] as? Bool, true)
        XCTAssertEqual(written["verbatim.capture_enabled"] as? Bool, true)
        XCTAssertEqual(written["verbatim.policy_version"] as? String, "fb-1")
        let queued = try agent.status().queueRecords
        XCTAssertEqual((written["verbatim.queue_records"] as? NSNumber)?.uint64Value, queued)
        XCTAssertNotNil(written["verbatim.updated_at"] as? String)
        XCTAssertTrue(written.keys.allSatisfy { $0 == "host.app.status" || $0.hasPrefix("verbatim.") })
        // The whole dictionary stays a property list (what the MDM reads).
        XCTAssertTrue(PropertyListSerialization.propertyList(written, isValidFor: .binary))
        try await agent.shutdown()
    }
}
