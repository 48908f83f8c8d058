import BackgroundTasks
import Foundation
import os
@testable import Verbatim
import XCTest

/// The platform mappings, as pure functions (no network, no scheduler).
final class PlatformTests: XCTestCase {
    func testNetworkPathMapping() {
        typealias Case = (satisfied: Bool, expensive: Bool, constrained: Bool, expected: NetworkState)
        let cases: [Case] = [
            (false, false, false, .offline),
            (false, true, true, .offline),
            (true, false, false, .unmetered),   // Wi-Fi, Ethernet
            (true, true, false, .metered),      // cellular, personal hotspot
            (true, false, true, .metered),      // Low Data Mode
            (true, true, true, .metered),
        ]
        for c in cases {
            XCTAssertEqual(
                PathNetworkState.state(satisfied: c.satisfied, expensive: c.expensive, constrained: c.constrained),
                c.expected,
                "\(c)"
            )
        }
        // Roaming is never reported: NWPath cannot tell (see PathNetworkState).
    }

    func testPathNetworkStateAnswersAtOnce() {
        let provider = PathNetworkState()
        // Whatever the simulator's network, an answer is there before the first update.
        XCTAssertNotEqual(provider.current(), .roaming)
    }

    func testLogLevelMapping() {
        XCTAssertEqual(OSLogSink.osLogType(.trace), .debug)
        XCTAssertEqual(OSLogSink.osLogType(.debug), .debug)
        XCTAssertEqual(OSLogSink.osLogType(.info), .info)
        XCTAssertEqual(OSLogSink.osLogType(.warn), .default)
        XCTAssertEqual(OSLogSink.osLogType(.error), .error)
        // A sink that throws nothing and takes any record.
        OSLogSink(category: "tests").log(level: .info, target: "verbatim_ffi::tests", message: "hello key=value")
    }

    func testBackgroundRequestsFollowThePolicySchedule() {
        let background = BackgroundUpload(options: BackgroundUpload.Options(
            processingIdentifier: "test.upload", refreshIdentifier: "test.refresh", retrySoonDelay: 60
        ))
        let schedule = UploadSchedule(requiredNetwork: .unmetered, intervalMinutes: 30)
        let now = Date(timeIntervalSince1970: 1_000_000)

        let processing = background.processingRequest(for: schedule, soon: false, now: now)
        XCTAssertEqual(processing.identifier, "test.upload")
        XCTAssertTrue(processing.requiresNetworkConnectivity)
        XCTAssertFalse(processing.requiresExternalPower)
        XCTAssertEqual(processing.earliestBeginDate, now.addingTimeInterval(30 * 60))

        let soon = background.processingRequest(for: schedule, soon: true, now: now)
        XCTAssertEqual(soon.earliestBeginDate, now.addingTimeInterval(60))

        let refresh = background.refreshRequest(for: schedule, now: now)
        XCTAssertEqual(refresh?.identifier, "test.refresh")
        XCTAssertEqual(refresh?.earliestBeginDate, now.addingTimeInterval(30 * 60))

        let noRefresh = BackgroundUpload(options: BackgroundUpload.Options(refreshIdentifier: nil))
        XCTAssertNil(noRefresh.refreshRequest(for: schedule, now: now))
    }

    func testTheAgentsScheduleComesFromThePolicy() async throws {
        let agent = try await openAgent()
        XCTAssertNil(try agent.status().uploadSchedule)
        _ = try await agent.applyPolicy(policy(extra: ["upload_network": "unmetered", "upload_interval_minutes": 45]))
        let schedule = try XCTUnwrap(try agent.status().uploadSchedule)
        XCTAssertEqual(schedule.requiredNetwork, .unmetered)
        XCTAssertEqual(schedule.intervalMinutes, 45)
        try await agent.shutdown()
    }
}
