import Foundation
import Network
import VerbatimFFI

/// The network as `NWPathMonitor` reports it, for the agent's upload policy (which networks are
/// allowed is decided in Rust; this only reports).
///
/// - no satisfied path → `.offline`;
/// - `isExpensive` (cellular, a personal hotspot) or `isConstrained` (Low Data Mode) → `.metered`;
/// - otherwise → `.unmetered`.
///
/// Roaming cannot be detected: `NWPath` does not say whether cellular is roaming, and no public
/// iOS API does. Cellular while roaming is reported `.metered`, so a policy with
/// `upload_network = any` and `upload_allow_roaming = false` cannot hold uploads back while
/// roaming on iOS. What does hold them: iOS's own Data Roaming switch (off by default), which
/// leaves no cellular path abroad (then `.offline`), or `upload_network = unmetered`.
public final class PathNetworkState: NetworkStateProvider, @unchecked Sendable {
    // @unchecked: `latest` is only read and written under `lock`; the monitor is thread-safe.
    private let monitor = NWPathMonitor()
    private let lock = NSLock()
    private var latest: NetworkState?

    public init(queue: DispatchQueue = DispatchQueue(label: "com.verbatim.network", qos: .utility)) {
        monitor.pathUpdateHandler = { [weak self] path in
            self?.store(PathNetworkState.state(of: path))
        }
        monitor.start(queue: queue)
    }

    deinit {
        monitor.cancel()
    }

    /// Asked by the agent once per upload, on an agent thread.
    public func current() -> NetworkState {
        lock.lock()
        let known = latest
        lock.unlock()
        // Before the monitor's first update (a background launch can upload at once).
        return known ?? PathNetworkState.state(of: monitor.currentPath)
    }

    private func store(_ state: NetworkState) {
        lock.lock()
        latest = state
        lock.unlock()
    }

    public static func state(of path: NWPath) -> NetworkState {
        state(satisfied: path.status == .satisfied, expensive: path.isExpensive, constrained: path.isConstrained)
    }

    /// The mapping itself, a pure function (an `NWPath` cannot be made in a test).
    public static func state(satisfied: Bool, expensive: Bool, constrained: Bool) -> NetworkState {
        guard satisfied else { return .offline }
        return expensive || constrained ? .metered : .unmetered
    }
}
