import os
import VerbatimFFI

/// The agent's log records to the unified log (`Logger`, Console.app, `log stream`,
/// sysdiagnose). Filtering by the policy's `log_level` happens in Rust before a record is even
/// formatted; records carry metadata only (kinds, sequence numbers, counts, key names, policy
/// versions: never content, never tokens or keys), which is why they are logged `.public`
/// (a `.private` record would read `<private>` on every device an admin inspects).
public final class OSLogSink: LogSink, @unchecked Sendable {
    // @unchecked: `Logger` is immutable and thread-safe, but not annotated Sendable on every SDK.
    public static let defaultSubsystem = "com.verbatim.agent"

    private let logger: Logger

    public init(subsystem: String = OSLogSink.defaultSubsystem, category: String = "agent") {
        logger = Logger(subsystem: subsystem, category: category)
    }

    public func log(level: LogLevel, target: String, message: String) {
        logger.log(level: Self.osLogType(level), "\(target, privacy: .public): \(message, privacy: .public)")
    }

    /// `trace`/`debug` → debug, `info` → info, `warn` → default (notice), `error` → error.
    /// (`off` never reaches a sink; mapped to error like Android does.)
    public static func osLogType(_ level: LogLevel) -> OSLogType {
        switch level {
        case .trace, .debug: return .debug
        case .info: return .info
        case .warn: return .default
        case .error, .off: return .error
        }
    }
}
