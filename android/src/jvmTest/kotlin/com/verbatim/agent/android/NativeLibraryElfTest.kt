package com.verbatim.agent.android

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.test.assertEquals
import kotlin.test.assertTrue
import org.junit.Test

/**
 * The native library is linked for 16 KB pages (Google Play's requirement for Android 15+):
 * bindings/build.rs passes `-z max-page-size=16384` to every Android and Linux link of the
 * cdylib, so the host library the tests load is linked exactly like the Android ones. Reads its
 * ELF program headers: every LOAD segment must be aligned to at least 0x4000.
 */
class NativeLibraryElfTest {
    private val library = File(System.getProperty("verbatim.lib.dir") ?: error("verbatim.lib.dir is not set (android/pom.xml sets it)"), "libverbatim_ffi.so")

    /** (p_type, p_align) of every program header of a 64-bit little-endian ELF file. */
    private fun programHeaders(bytes: ByteArray): List<Pair<Int, Long>> {
        val elf = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN)
        assertEquals(0x7f454c46, ByteBuffer.wrap(bytes, 0, 4).int, "not an ELF file")
        assertEquals(2, bytes[4].toInt(), "not ELF64")
        assertEquals(1, bytes[5].toInt(), "not little-endian")
        val phoff = elf.getLong(0x20)
        val phentsize = elf.getShort(0x36).toInt()
        val phnum = elf.getShort(0x38).toInt()
        return (0 until phnum).map { i ->
            val at = (phoff + i.toLong() * phentsize).toInt()
            elf.getInt(at) to elf.getLong(at + 0x30)
        }
    }

    @Test
    fun everyLoadSegmentIsAlignedFor16KbPages() {
        assertTrue(library.isFile, "$library was not built")
        val loads = programHeaders(library.readBytes()).filter { it.first == PT_LOAD }
        assertTrue(loads.isNotEmpty(), "no LOAD segment")
        for ((_, align) in loads) {
            assertTrue(align >= 0x4000, "LOAD segment aligned to 0x${align.toString(16)}, needs >= 0x4000")
        }
    }

    private companion object {
        const val PT_LOAD = 1
    }
}
