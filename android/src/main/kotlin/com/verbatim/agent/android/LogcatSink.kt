package com.verbatim.agent.android

import android.util.Log
import com.verbatim.ffi.core.LogLevel
import com.verbatim.ffi.LogSink

/**
 * The agent's log records to logcat. Filtering by the policy's `log_level` happens in Rust
 * before a record is formatted; records carry metadata only (never content, never secrets).
 */
class LogcatSink(private val tag: String = "Verbatim") : LogSink {
    override fun log(level: LogLevel, target: String, message: String) {
        val priority = when (level) {
            LogLevel.TRACE -> Log.VERBOSE
            LogLevel.DEBUG -> Log.DEBUG
            LogLevel.INFO -> Log.INFO
            LogLevel.WARN -> Log.WARN
            LogLevel.ERROR, LogLevel.OFF -> Log.ERROR
        }
        Log.println(priority, tag, "$target: $message")
    }
}
