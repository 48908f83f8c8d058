package com.verbatim.agent

import java.io.File
import java.lang.reflect.Modifier
import kotlin.test.assertEquals
import kotlin.test.assertTrue
import org.junit.Test

/**
 * Every method the Rust library exports (the generated `AgentInterface`, and the top-level
 * functions) is reachable from both hand-written facades, Kotlin (VerbatimAgent.kt) and Swift
 * (ios/Sources/Verbatim/VerbatimAgent.swift), or listed here as deliberately internal. A new
 * Rust export fails this test until both platforms wrap it (scripts/test-swift.sh checks the
 * Swift side against the Swift bindings the same way).
 *
 * Reads the classes (reflection, no native call: runs without Robolectric) and the sources.
 */
class FacadeCoverageTest {
    private val root = File(System.getProperty("verbatim.root") ?: error("verbatim.root is not set (android/pom.xml sets it)"))
    private val kotlinFacade = root.resolve("android/src/main/kotlin/com/verbatim/agent/VerbatimAgent.kt").readText()
    private val swiftFacade = root.resolve("ios/Sources/Verbatim/VerbatimAgent.swift").readText()

    /** Exports that are not part of the product's API, and why. */
    private val internal = mapOf(
        "debugLog" to "test-hooks feature only: drives the log sink in tests",
        "debugPanic" to "test-hooks feature only: panic handling tests",
        "debugPanicAsync" to "test-hooks feature only: panic handling tests",
        "debugPanicUnguarded" to "test-hooks feature only: panic handling tests",
    )

    /** Exports only the Kotlin facade wraps, and why the Swift facade does not. */
    private val androidOnly = mapOf(
        "beginTelephonyScan" to "the Telephony provider (Google Messages archival) exists on Android only",
    )

    /** The generated file's own helpers (public for the generated code's sake), not exports. */
    private fun isMachinery(name: String) =
        '$' in name || name.startsWith("uniffi") || name.startsWith("getUniffi") || name == "use"

    @Test
    fun everyAgentMethodIsWrappedByBothFacades() {
        val methods = Class.forName("com.verbatim.ffi.AgentInterface").declaredMethods
            .map { it.name.substringBefore('-') } // Duration/ULong parameters mangle the JVM name
            .toSortedSet()
        assertTrue(methods.size >= 15, "the generated AgentInterface looks empty: $methods")
        val missingKotlin = methods.filter { it !in internal && !kotlinFacade.contains("ffi.$it(") }
        val missingSwift = methods.filter { it !in internal && it !in androidOnly && !swiftFacade.contains("ffi.$it(") }
        assertEquals(emptyList(), missingKotlin, "not wrapped in android/.../VerbatimAgent.kt")
        assertEquals(emptyList(), missingSwift, "not wrapped in ios/Sources/Verbatim/VerbatimAgent.swift")
        assertEquals(emptyList(), androidOnly.keys.filter { it !in methods }, "listed as Android-only but no longer exported")
    }

    @Test
    fun everyTopLevelFunctionIsWrappedOrInternal() {
        val functions = Class.forName("com.verbatim.ffi.Verbatim_ffiKt").declaredMethods
            .filter { Modifier.isPublic(it.modifiers) && Modifier.isStatic(it.modifiers) }
            .map { it.name }.filterNot(::isMachinery).toSortedSet()
        assertTrue("checkPolicy" in functions, "the generated top-level functions were not found: $functions")
        val missing = functions.filter { it !in internal && !kotlinFacade.contains("com.verbatim.ffi.$it(") }
        assertEquals(emptyList(), missing, "top-level exports not wrapped in VerbatimAgent.kt (or listed as internal)")
        val stale = internal.keys.filter { it !in functions }
        assertEquals(emptyList(), stale, "listed as internal but no longer exported")
    }

    @Test
    fun javaCallersCanNameTheDeadlineMethods() {
        // A Kotlin Duration parameter mangles the JVM name (upload-XXXX), which Java cannot call;
        // the millisecond overloads keep the plain names.
        val methods = VerbatimAgent::class.java.methods
        for (name in listOf("upload", "unenroll")) {
            assertTrue(
                methods.any { it.name == name && it.parameterTypes.firstOrNull() == Long::class.javaPrimitiveType },
                "VerbatimAgent.$name(long, ...) is not visible to Java",
            )
        }
    }
}
