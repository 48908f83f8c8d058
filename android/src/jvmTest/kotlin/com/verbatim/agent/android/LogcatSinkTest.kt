package com.verbatim.agent.android

import android.util.Log
import com.verbatim.ffi.core.LogLevel
import kotlin.test.assertEquals
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.annotation.Config
import org.robolectric.shadows.ShadowLog

@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34], manifest = Config.NONE)
class LogcatSinkTest {
    @Test
    fun recordsReachLogcatAtTheirPriority() {
        ShadowLog.clear()
        val sink = LogcatSink("VerbatimTest")
        sink.log(LogLevel.TRACE, "core::queue", "t")
        sink.log(LogLevel.INFO, "core::upload", "i")
        sink.log(LogLevel.ERROR, "core::store", "e")
        val logs = ShadowLog.getLogsForTag("VerbatimTest")
        assertEquals(listOf(Log.VERBOSE, Log.INFO, Log.ERROR), logs.map { it.type })
        assertEquals(listOf("core::queue: t", "core::upload: i", "core::store: e"), logs.map { it.msg })
    }
}
