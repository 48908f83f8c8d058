import Foundation

/// Where the agent keeps its queue, and how that directory is protected.
///
/// - Protection class `completeUntilFirstUserAuthentication`: the files are encrypted until
///   the phone is unlocked once after boot, then readable while locked, so a capture from a
///   notification handler or an upload in a background task works with the screen locked.
///   (`complete` would make every locked-phone capture fail; the records are sealed to the
///   archive's key anyway.) Files the agent creates later inherit the directory's class.
/// - Excluded from iCloud and iTunes backups: sealed records belong to the archive, not to a
///   backup that could be restored onto another phone and replay sequence numbers.
public enum DataDirectory {
    public static let protection = FileProtectionType.completeUntilFirstUserAuthentication

    /// `Library/Application Support/Verbatim` in the app's container. (An app that captures
    /// from an extension too should pass a directory in its App Group container instead, and
    /// open the agent in one process at a time.)
    public static func defaultURL() throws -> URL {
        try FileManager.default
            .url(for: .applicationSupportDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
            .appendingPathComponent("Verbatim", isDirectory: true)
    }

    /// Creates `url` if needed and (re)applies the protection class and the backup exclusion,
    /// also to files already in it (a directory created by an older build keeps working).
    public static func prepare(_ url: URL) throws {
        let files = FileManager.default
        let attributes: [FileAttributeKey: Any] = [.protectionKey: protection]
        try files.createDirectory(at: url, withIntermediateDirectories: true, attributes: attributes)
        try files.setAttributes(attributes, ofItemAtPath: url.path)
        for name in try files.contentsOfDirectory(atPath: url.path) {
            try files.setAttributes(attributes, ofItemAtPath: url.appendingPathComponent(name).path)
        }
        var values = URLResourceValues()
        values.isExcludedFromBackup = true
        var directory = url
        try directory.setResourceValues(values)
    }
}
