import Foundation
import Verbatim
import XCTest

// Shared fixtures of the XCTest suite. The tests run against the real library (the XCFramework
// built by ios/build-xcframework.sh) on an iOS simulator: see ios/README.md.

let businessLine = "+15550100"
let peerHandle = "+15550199"

/// A valid X25519 public key for tests that never reach an archive (any 32 bytes are one);
/// the same bytes as the Kotlin tests' OFFLINE_KEY.
let offlineKey = Data((0..<32).map { UInt8(truncatingIfNeeded: $0 * 7 + 1) }).base64EncodedString()

/// A complete policy as the MDM would push it (property-list types), for an archive that is
/// never reached (port 9: discard).
func policy(version: String = "v1", extra: [String: Any] = [:]) -> [String: Any] {
    var base: [String: Any] = [
        "archive_url": "https://127.0.0.1:9/",
        "archive_public_key": offlineKey,
        "tenant_id": "tenant-ios-tests",
        "device_id": "ios-test-device",
        "device_token": "tok-" + UUID().uuidString,
        "business_lines": [businessLine],
        "capture_channels": "sms,whatsapp,voice",
        "log_level": "info",
        "policy_version": version,
    ]
    base.merge(extra) { _, new in new }
    return base
}

func meta(_ id: String, channel: Channel = .sms, line: String = businessLine) -> EventMeta {
    EventMeta(
        channel: channel,
        line: line,
        conversationId: "conv-1",
        sourceId: id,
        sourceTimeMs: Int64(Date().timeIntervalSince1970 * 1000)
    )
}

func message(_ id: String, text: String? = nil, line: String = businessLine) -> MessageEvent {
    MessageEvent(
        meta: meta(id, line: line),
        direction: .outbound,
        sender: line,
        recipients: [peerHandle],
        text: text ?? "hello \(id)",
        attachmentIds: [],
        replyTo: nil
    )
}

/// A fresh directory under the test run's temporary directory.
func temporaryDirectory(_ name: String) -> URL {
    FileManager.default.temporaryDirectory
        .appendingPathComponent("verbatim-\(name)-\(UUID().uuidString)", isDirectory: true)
}

/// A network provider whose answer a test can change.
final class FakeNetwork: NetworkStateProvider, @unchecked Sendable {
    private let lock = NSLock()
    private var state: NetworkState

    init(_ state: NetworkState = .unmetered) {
        self.state = state
    }

    func set(_ state: NetworkState) {
        lock.lock()
        self.state = state
        lock.unlock()
    }

    func current() -> NetworkState {
        lock.lock()
        defer { lock.unlock() }
        return state
    }
}

/// Collects the agent's notices (called on an agent thread).
final class NoticeLog: AgentObserver, @unchecked Sendable {
    private let lock = NSLock()
    private var notices: [AgentNotice] = []

    func onEvent(notice: AgentNotice) {
        lock.lock()
        notices.append(notice)
        lock.unlock()
    }

    var all: [AgentNotice] {
        lock.lock()
        defer { lock.unlock() }
        return notices
    }
}

func openAgent(
    _ directory: URL = temporaryDirectory("agent"),
    network: FakeNetwork = FakeNetwork(),
    notices: NoticeLog? = nil
) async throws -> VerbatimAgent {
    try await VerbatimAgent.open(directory: directory, network: network, observer: notices)
}

/// XCTAssertThrowsError for async code; hands the error to `check`.
func assertThrowsAsync<T>(
    _ body: () async throws -> T,
    file: StaticString = #filePath,
    line: UInt = #line,
    _ check: (Error) -> Void = { _ in }
) async {
    do {
        let value = try await body()
        XCTFail("expected an error, got \(value)", file: file, line: line)
    } catch {
        check(error)
    }
}

/// A UserDefaults suite of its own, removed by the caller's tearDown.
func scratchDefaults(_ test: String) -> (UserDefaults, String) {
    let name = "verbatim-tests-\(test)-\(UUID().uuidString)"
    return (UserDefaults(suiteName: name)!, name)
}
