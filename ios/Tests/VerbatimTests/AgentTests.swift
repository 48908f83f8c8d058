import Foundation
@testable import Verbatim
import XCTest

/// The facade against the real library: data directory, policy, capture, status, upload.
final class AgentTests: XCTestCase {
    func testDataDirectoryIsProtectedAndExcludedFromBackup() async throws {
        let directory = temporaryDirectory("protection")
        let agent = try await openAgent(directory)
        try await agent.shutdown()

        let values = try directory.resourceValues(forKeys: [.isExcludedFromBackupKey])
        XCTAssertEqual(values.isExcludedFromBackup, true)

        let files = FileManager.default
        let protection = try files.attributesOfItem(atPath: directory.path)[.protectionKey] as? FileProtectionType
        #if targetEnvironment(simulator)
        if protection == nil {
            throw XCTSkip("this simulator does not report data protection classes: run on a device for this check")
        }
        #endif
        XCTAssertEqual(protection, .completeUntilFirstUserAuthentication)
        // What the agent created inside inherits the class (SQLite files).
        for name in try files.contentsOfDirectory(atPath: directory.path) {
            let path = directory.appendingPathComponent(name).path
            XCTAssertEqual(try files.attributesOfItem(atPath: path)[.protectionKey] as? FileProtectionType,
                           .completeUntilFirstUserAuthentication, name)
        }
        // A file left with another class by an older build gets the class when the directory
        // is prepared again.
        let stray = directory.appendingPathComponent("stray")
        XCTAssertTrue(files.createFile(atPath: stray.path, contents: Data([1]),
                                       attributes: [.protectionKey: FileProtectionType.none]))
        try DataDirectory.prepare(directory)
        XCTAssertEqual(try files.attributesOfItem(atPath: stray.path)[.protectionKey] as? FileProtectionType,
                       .completeUntilFirstUserAuthentication)
    }

    func testWithoutPolicyCaptureFailsClosed() async throws {
        let agent = try await openAgent()
        let status = try agent.status()
        XCTAssertFalse(status.configured)
        XCTAssertFalse(status.captureEnabled)
        XCTAssertTrue(status.failClosed)
        XCTAssertNil(status.uploadSchedule)
        await assertThrowsAsync({ try await agent.capture(message("m1")) }) { error in
            guard case .NotConfigured = error as? VerbatimError else {
                return XCTFail("expected NotConfigured, got \(error)")
            }
            XCTAssertEqual((error as? VerbatimError)?.kind(), .notConfigured)
        }
        try await agent.shutdown()
    }

    func testApplyCaptureStatus() async throws {
        let notices = NoticeLog()
        let directory = temporaryDirectory("capture")
        let agent = try await openAgent(directory, notices: notices)

        let warnings = try await agent.applyPolicy(policy(extra: [
            "no_such_key": "x", "capture_attachments": true, "capture_call_recordings": "true",
        ]))
        XCTAssertEqual(warnings.map(\.key), ["no_such_key"])
        var status = try agent.status()
        XCTAssertTrue(status.configured)
        XCTAssertTrue(status.captureEnabled)
        XCTAssertEqual(status.policyVersion, "v1")
        XCTAssertEqual(Set(status.channels), [.sms, .whatsapp, .voice])
        XCTAssertNotNil(status.uploadSchedule)

        var outcomes: [CaptureOutcome] = []
        outcomes.append(try await agent.capture(message("m1")))
        outcomes.append(try await agent.capture(EditEvent(meta: meta("e1"), targetMessageId: "m1", editor: businessLine, newText: "hello again")))
        outcomes.append(try await agent.capture(UnsendEvent(meta: meta("u1"), targetMessageId: "m1", actor: businessLine)))
        outcomes.append(try await agent.capture(ReactionEvent(meta: meta("r1"), targetMessageId: "m1", actor: peerHandle, reaction: "👍", removed: false)))
        let photo = directory.appendingPathComponent("photo.jpg")
        try Data((0..<300_000).map { UInt8($0 % 251) }).write(to: photo)
        outcomes.append(try await agent.capture(AttachmentEvent(
            meta: meta("a1"), messageId: "m1", direction: .inbound, sender: peerHandle,
            fileName: "photo.jpg", mimeType: "image/jpeg", path: photo.path
        )))
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        outcomes.append(try await agent.capture(CallEvent(
            meta: meta("c1", channel: .voice), direction: .inbound, participants: [peerHandle, businessLine],
            startedMs: now - 60_000, endedMs: now, outcome: .answered, recordingPath: nil, recordingMimeType: nil
        )))
        var previousLast: UInt64 = 0
        for outcome in outcomes {
            guard case let .captured(firstSeq, lastSeq) = outcome else {
                return XCTFail("expected captured, got \(outcome)")
            }
            XCTAssertGreaterThan(firstSeq, previousLast)
            XCTAssertGreaterThanOrEqual(lastSeq, firstSeq)
            previousLast = lastSeq
        }

        // Not business: another line. Malformed: typed error naming the field, not the value.
        let outOfScope = try await agent.capture(message("m2", line: "+15550777"))
        XCTAssertEqual(outOfScope, .outOfScope)
        let secret = "SECRET-\(UUID().uuidString)"
        var bad = message("m3", text: secret)
        bad.recipients = []
        await assertThrowsAsync({ try await agent.capture(bad) }) { error in
            guard case let .InvalidEvent(detail) = error as? VerbatimError else {
                return XCTFail("expected InvalidEvent, got \(error)")
            }
            XCTAssertTrue(detail.contains("recipients"), detail)
            XCTAssertFalse(String(describing: error).contains(secret))
        }

        status = try agent.status()
        XCTAssertEqual(status.lastSeq, previousLast)
        XCTAssertGreaterThanOrEqual(status.queueRecords, UInt64(outcomes.count))
        XCTAssertEqual(status.counters.captured, UInt64(outcomes.count))
        XCTAssertEqual(status.counters.outOfScope, 1)
        XCTAssertEqual(status.counters.invalid, 1)
        try await agent.tick()
        XCTAssertTrue(notices.all.contains { notice in
            if case let .policyApplied(version, _, _) = notice { return version == "v1" }
            return false
        })
        try await agent.shutdown()
    }

    func testRejectedPolicyKeepsThePolicyInForce() async throws {
        let agent = try await openAgent()
        _ = try await agent.applyPolicy(policy())
        await assertThrowsAsync({
            try await agent.applyPolicy(policy(version: "v2", extra: ["archive_url": "http://archive.example.com"]))
        }) { error in
            guard case let .PolicyRejected(_, problems) = error as? VerbatimError else {
                return XCTFail("expected PolicyRejected, got \(error)")
            }
            XCTAssertEqual(problems.first { $0.key == "archive_url" }?.kind, .insecureUrl)
        }
        XCTAssertEqual(try agent.status().policyVersion, "v1")
        try await agent.shutdown()
    }

    func testUploadReportsOfflineWithoutThrowing() async throws {
        let network = FakeNetwork(.offline)
        let agent = try await openAgent(network: network)
        _ = try await agent.applyPolicy(policy())
        _ = try await agent.capture(message("m1"))
        let report = try await agent.upload(deadline: 5)
        XCTAssertEqual(report.stopped, .offline)
        XCTAssertEqual(report.recordsSent, 0)
        XCTAssertTrue(report.morePending)
        XCTAssertFalse(report.retrySoon)
        try await agent.shutdown()
    }

    func testDeadlineConversion() {
        XCTAssertEqual(VerbatimAgent.milliseconds(1.5), 1_500)
        XCTAssertEqual(VerbatimAgent.milliseconds(-1), 0)
        XCTAssertEqual(VerbatimAgent.milliseconds(.nan), 0)
        XCTAssertEqual(VerbatimAgent.milliseconds(.infinity), 365 * 86_400 * 1_000)
        XCTAssertEqual(VerbatimAgent.milliseconds(1e300), 365 * 86_400 * 1_000)
    }
}
