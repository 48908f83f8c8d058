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

    // MARK: Foreground upload: the plan

    func testThePlanFollowsTheAgentsStatus() async throws {
        let options = ForegroundUpload.Options(coalesce: 2, deadline: 30, minimumInterval: 30)
        let now = Date()
        let agent = try await openAgent(network: FakeNetwork(.offline))

        // No policy: nothing to upload to.
        XCTAssertNil(ForegroundUpload.Plan().start(status: try agent.status(), now: now, options: options))
        _ = try await agent.applyPolicy(policy(extra: ["upload_interval_minutes": 20]))
        // Nothing queued.
        XCTAssertNil(ForegroundUpload.Plan().start(status: try agent.status(), now: now, options: options))

        _ = try await agent.capture(message("plan"))
        let status = try agent.status()
        // After the quiet time.
        XCTAssertEqual(ForegroundUpload.Plan().start(status: status, now: now, options: options), now.addingTimeInterval(2))
        // Sessions at least minimumInterval apart.
        let recent = ForegroundUpload.Plan(lastStart: now.addingTimeInterval(-10), lastStop: .offline)
        XCTAssertEqual(recent.start(status: status, now: now, options: options), now.addingTimeInterval(20))
        // After an error that needs a person: the policy's interval, not every capture.
        let failed = ForegroundUpload.Plan(lastStart: now.addingTimeInterval(-10), lastStop: .error)
        XCTAssertEqual(failed.start(status: status, now: now, options: options), now.addingTimeInterval(20 * 60 - 10))
        // Not before the core's back-off ends.
        var backingOff = status
        backingOff.upload.nextRetryMs = Int64(now.addingTimeInterval(45).timeIntervalSince1970 * 1_000)
        let retry = try XCTUnwrap(ForegroundUpload.Plan().start(status: backingOff, now: now, options: options))
        XCTAssertEqual(retry.timeIntervalSince1970, now.addingTimeInterval(45).timeIntervalSince1970, accuracy: 0.001)
        // Not while the archive refuses the archive key.
        var refused = status
        refused.upload.archiveKeyRefused = true
        XCTAssertNil(ForegroundUpload.Plan().start(status: refused, now: now, options: options))
        try await agent.shutdown()
    }

    // MARK: Foreground upload: the sessions

    func testABurstOfCapturesIsOneUpload() async throws {
        let agent = try await agentWithQueuedRecords()
        let uploads = UploadCounter()
        let first = expectation(description: "one upload")
        let foreground = ForegroundUpload(
            options: .init(coalesce: 0.2, deadline: 5, minimumInterval: 60),
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
            options: .init(coalesce: 0.3, deadline: 5, minimumInterval: 60),
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

    func testNothingQueuedMeansNoUpload() async throws {
        let agent = try await openAgent(network: FakeNetwork(.offline))
        _ = try await agent.applyPolicy(policy())
        let uploads = UploadCounter()
        let none = expectation(description: "no upload")
        none.isInverted = true
        let foreground = ForegroundUpload(
            options: .init(coalesce: 0, deadline: 5, minimumInterval: 0),
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
