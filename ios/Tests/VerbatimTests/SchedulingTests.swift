import BackgroundTasks
import Foundation
@testable import Verbatim
import XCTest

/// When uploads happen: one registration of the background tasks per process, bookings that
/// never postpone a booked window, and uploads soon after capture while the app is active.
final class SchedulingTests: XCTestCase {
    // MARK: One agent, one registration

    /// `ManagedAgent()` does not compile (the initializer is private): the process's one agent
    /// is `shared`, so the background tasks cannot be registered twice through it.
    func testThereIsOneManagedAgent() {
        XCTAssertTrue(ManagedAgent.shared === ManagedAgent.shared)
    }

    /// A second registration of an identifier would raise in BGTaskScheduler: it registers
    /// nothing (and never reaches BGTaskScheduler, which these tests could not call after
    /// launch anyway).
    func testASecondRegistrationOfAnIdentifierRegistersNothing() {
        let identifier = "test.upload.\(UUID().uuidString)"
        // As if a first BackgroundUpload had registered it.
        XCTAssertEqual(BackgroundUpload.claims.claim([identifier]), [])

        let second = BackgroundUpload(options: .init(processingIdentifier: identifier, refreshIdentifier: nil))
        XCTAssertEqual(second.register { _ in true }, .alreadyRegistered([identifier]))
    }

    func testTheSameIdentifierTwiceInOneOptionsRegistersNothing() {
        let identifier = "test.both.\(UUID().uuidString)"
        let both = BackgroundUpload(options: .init(processingIdentifier: identifier, refreshIdentifier: identifier))
        XCTAssertEqual(both.register { _ in true }, .alreadyRegistered([identifier]))
    }

    func testIdentifierClaimsAreAllOrNothing() {
        let claims = BackgroundUpload.IdentifierClaims()
        XCTAssertEqual(claims.claim(["a", "b"]), [])
        XCTAssertEqual(claims.claim(["b", "c"]), ["b"])
        // The refused claim took nothing: c is still free.
        XCTAssertEqual(claims.claim(["c"]), [])
        XCTAssertEqual(claims.claim(["d", "d"]), ["d"])
        XCTAssertEqual(claims.claim(["d"]), [])
    }

    // MARK: Booking never postpones

    func testABookedWindowIsNeverPushedLater() {
        let now = Date(timeIntervalSince1970: 1_000_000)
        func request(_ begin: Date?) -> BGProcessingTaskRequest {
            let request = BGProcessingTaskRequest(identifier: "test.upload")
            request.earliestBeginDate = begin
            return request
        }
        // Nothing booked: book.
        XCTAssertTrue(BackgroundUpload.shouldSubmit(request(now), pending: nil))
        // Booked earlier than the new one (the app opened again, a policy push): keep it.
        XCTAssertFalse(BackgroundUpload.shouldSubmit(request(now.addingTimeInterval(900)), pending: request(now.addingTimeInterval(300))))
        XCTAssertFalse(BackgroundUpload.shouldSubmit(request(now.addingTimeInterval(300)), pending: request(now.addingTimeInterval(300))))
        // Booked as soon as possible: keep it.
        XCTAssertFalse(BackgroundUpload.shouldSubmit(request(now), pending: request(nil)))
        // The new one is earlier (retry soon, a shorter interval): replace.
        XCTAssertTrue(BackgroundUpload.shouldSubmit(request(now.addingTimeInterval(60)), pending: request(now.addingTimeInterval(900))))
        XCTAssertTrue(BackgroundUpload.shouldSubmit(request(nil), pending: request(now.addingTimeInterval(900))))
    }

    // MARK: Foreground upload: when a session starts

    /// The agent decides when an upload is due (`uploadDueMs`, tested in Rust:
    /// core/src/upload/due.rs, core/tests/upload_gate.rs); the Swift adds the quiet time.
    func testASessionStartsWhenTheAgentSaysAnUploadIsDue() async throws {
        let now = Date()
        let agent = try await openAgent(network: FakeNetwork(.offline))
        // No policy: nothing is due, no session.
        XCTAssertNil(try agent.status().uploadDueMs)
        XCTAssertNil(ForegroundUpload.start(status: try agent.status(), now: now, coalesce: 2))

        _ = try await agent.applyPolicy(policy())
        _ = try await agent.capture(message("due"))
        var status = try agent.status()
        let due = try XCTUnwrap(status.uploadDueMs)
        XCTAssertLessThanOrEqual(Double(due) / 1_000, Date().timeIntervalSince1970 + 1, "records wait: due now")
        // Due now: after the quiet time.
        status.uploadDueMs = Int64(now.timeIntervalSince1970 * 1_000)
        XCTAssertEqual(ForegroundUpload.start(status: status, now: now, coalesce: 2), now.addingTimeInterval(2))
        // Due later (back-off, spacing, an error's interval): then.
        status.uploadDueMs = Int64(now.addingTimeInterval(45).timeIntervalSince1970 * 1_000)
        let later = try XCTUnwrap(ForegroundUpload.start(status: status, now: now, coalesce: 2))
        XCTAssertEqual(later.timeIntervalSince1970, now.addingTimeInterval(45).timeIntervalSince1970, accuracy: 0.001)

        // After a session the network refused, the agent spaces the next one.
        _ = try await agent.upload(deadline: 5)
        let spaced = try XCTUnwrap(try agent.status().uploadDueMs)
        XCTAssertGreaterThan(Double(spaced) / 1_000, Date().timeIntervalSince1970 + 20)
        try await agent.shutdown()
    }

    // MARK: Foreground upload: the sessions

    func testABurstOfCapturesIsOneUpload() async throws {
        let agent = try await agentWithQueuedRecords()
        let uploads = UploadCounter()
        let first = expectation(description: "one upload")
        let foreground = ForegroundUpload(
            options: .init(coalesce: 0.2, deadline: 5),
            status: { try agent.status() },
            upload: { _ in uploads.record(first) }
        )
        foreground.setActive(true)
        for _ in 0..<5 {
            foreground.requested()
        }
        await fulfillment(of: [first], timeout: 5)
        await foreground.current?.value
        XCTAssertEqual(uploads.count, 1)
        XCTAssertNil(foreground.current, "no second session for captures the first one covered")
        try await agent.shutdown()
    }

    func testNoUploadWhileInactiveOrAfterLeavingTheForeground() async throws {
        let agent = try await agentWithQueuedRecords()
        let uploads = UploadCounter()
        let none = expectation(description: "no upload")
        none.isInverted = true
        let foreground = ForegroundUpload(
            options: .init(coalesce: 0.3, deadline: 5),
            status: { try agent.status() },
            upload: { _ in uploads.record(none) }
        )
        // Never active: a capture books nothing.
        foreground.requested()
        XCTAssertNil(foreground.current)
        // Active, then left before the quiet time ended: the booked session is dropped.
        foreground.setActive(true)
        let booked = try XCTUnwrap(foreground.current)
        foreground.setActive(false)
        XCTAssertNil(foreground.current)
        await booked.value
        await fulfillment(of: [none], timeout: 0.6)
        XCTAssertEqual(uploads.count, 0)
        try await agent.shutdown()
    }

    /// A session waiting for a due time far away (an error under the old policy) is booked
    /// again when the policy changes, and runs at the new answer.
    func testANewPolicyEndsAWaitTheOldOneImposed() async throws {
        let agent = try await agentWithQueuedRecords()
        var later = try agent.status()
        later.uploadDueMs = Int64(Date().addingTimeInterval(3_600).timeIntervalSince1970 * 1_000)
        let answer = StatusBox(later)
        let uploads = UploadCounter()
        let ran = expectation(description: "upload after the policy changed")
        let foreground = ForegroundUpload(
            options: .init(coalesce: 0, deadline: 5),
            status: { answer.value },
            upload: { _ in uploads.record(ran) }
        )
        foreground.setActive(true)
        let waiting = try XCTUnwrap(foreground.current)
        answer.value = try agent.status() // the new policy's answer: due now
        foreground.reconsider()
        await fulfillment(of: [ran], timeout: 5)
        await waiting.value // the old booking ended without uploading
        XCTAssertEqual(uploads.count, 1)
        try await agent.shutdown()
    }

    /// Nothing due (here: no policy, so nowhere to upload to): the session ends at once.
    func testNothingDueMeansNoUpload() async throws {
        let agent = try await openAgent(network: FakeNetwork(.offline))
        XCTAssertNil(try agent.status().uploadDueMs)
        let uploads = UploadCounter()
        let none = expectation(description: "no upload")
        none.isInverted = true
        let foreground = ForegroundUpload(
            options: .init(coalesce: 0, deadline: 5),
            status: { try agent.status() },
            upload: { _ in uploads.record(none) }
        )
        foreground.setActive(true)
        await foreground.current?.value
        await fulfillment(of: [none], timeout: 0.2)
        XCTAssertEqual(uploads.count, 0)
        try await agent.shutdown()
    }

    /// The facade tells the hook after a capture that stored something, not after one out of
    /// scope.
    func testCapturesThatStoreTellTheHook() async throws {
        let agent = try await openAgent(network: FakeNetwork(.offline))
        _ = try await agent.applyPolicy(policy())
        let stored = expectation(description: "told once")
        stored.assertForOverFulfill = true
        agent.captured.set { stored.fulfill() }
        _ = try await agent.capture(message("in scope"))
        _ = try await agent.capture(message("personal", line: "+15550777"))
        await fulfillment(of: [stored], timeout: 1)
        try await agent.shutdown()
    }

    // MARK: Helpers

    private func agentWithQueuedRecords() async throws -> VerbatimAgent {
        let agent = try await openAgent(network: FakeNetwork(.offline))
        _ = try await agent.applyPolicy(policy())
        _ = try await agent.capture(message("queued"))
        XCTAssertGreaterThan(try agent.status().queueRecords, 0)
        return agent
    }
}

/// A status a test can change while a session reads it.
private final class StatusBox: @unchecked Sendable {
    private let lock = NSLock()
    private var status: AgentStatus

    init(_ status: AgentStatus) {
        self.status = status
    }

    var value: AgentStatus {
        get {
            lock.lock()
            defer { lock.unlock() }
            return status
        }
        set {
            lock.lock()
            status = newValue
            lock.unlock()
        }
    }
}

/// Counts the fake upload's calls and fulfils an expectation on each.
private final class UploadCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var calls = 0

    var count: Int {
        lock.lock()
        defer { lock.unlock() }
        return calls
    }

    func record(_ expectation: XCTestExpectation) -> UploadReport {
        lock.lock()
        calls += 1
        lock.unlock()
        expectation.fulfill()
        return UploadReport(
            stopped: .done, detail: nil, errorKind: nil, recordsSent: 1, bytesSent: 100, batches: 1,
            duplicates: 0, retries: 0, ackedThrough: 1, elapsedMs: 10, morePending: false, retrySoon: false
        )
    }
}
