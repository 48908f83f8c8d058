package com.verbatim.agent.android

import android.app.job.JobService
import com.verbatim.ffi.core.RequiredNetwork
import com.verbatim.ffi.core.UploadSchedule
import java.io.File
import java.lang.reflect.Modifier
import javax.xml.parsers.DocumentBuilderFactory
import kotlin.test.assertEquals
import kotlin.test.assertNotNull
import kotlin.test.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.annotation.Config
import org.w3c.dom.Element

/**
 * What the AAR hands the app, checked against the committed files: the manifest's components and
 * permissions, and the consumer ProGuard rules against what the generated bindings register with
 * JNA (a class R8 renames or strips there breaks the app at run time, not at build time).
 */
@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34], manifest = Config.NONE)
class PackagingTest {
    private val root = File(System.getProperty("verbatim.root") ?: error("verbatim.root is not set (android/pom.xml sets it)"))
    private val androidNs = "http://schemas.android.com/apk/res/android"

    private fun manifest(): Element = DocumentBuilderFactory.newInstance().apply { isNamespaceAware = true }
        .newDocumentBuilder().parse(root.resolve("android/src/main/AndroidManifest.xml")).documentElement

    private fun Element.children(tag: String): List<Element> =
        (0 until getElementsByTagName(tag).length).map { getElementsByTagName(tag).item(it) as Element }

    @Test
    fun theManifestDeclaresTheJobServiceAndThePermissionsItNeeds() {
        val m = manifest()
        val permissions = m.children("uses-permission").map { it.getAttributeNS(androidNs, "name") }.toSet()
        for (p in listOf("android.permission.INTERNET", "android.permission.ACCESS_NETWORK_STATE", "android.permission.RECEIVE_BOOT_COMPLETED")) {
            assertTrue(p in permissions, "missing <uses-permission> $p")
        }
        val service = m.children("service").single { it.getAttributeNS(androidNs, "name").endsWith(".UploadJobService") }
        val name = service.getAttributeNS(androidNs, "name")
        // JobScheduler binds only to a service guarded by BIND_JOB_SERVICE; nothing else may start it.
        assertEquals("android.permission.BIND_JOB_SERVICE", service.getAttributeNS(androidNs, "permission"))
        assertEquals("false", service.getAttributeNS(androidNs, "exported"))
        assertTrue(JobService::class.java.isAssignableFrom(Class.forName(name)), "$name is not a JobService")
        // The jobs the library schedules name exactly that component.
        UploadScheduler.jobIds = UploadJobIds.DEFAULT
        UploadScheduler.schedule(app(), UploadSchedule(RequiredNetwork.ANY, 15u))
        assertEquals(name, jobScheduler().getPendingJob(UploadJobIds.DEFAULT_PERIODIC)!!.service.className)
        // The managed configuration schema the MDM reads.
        val meta = m.children("meta-data").single { it.getAttributeNS(androidNs, "name") == "android.content.APP_RESTRICTIONS" }
        val resource = meta.getAttributeNS(androidNs, "resource")
        assertEquals("@xml/app_restrictions", resource)
        assertTrue(root.resolve("android/src/main/res/xml/app_restrictions.xml").isFile)
    }

    @Test
    fun theManifestDeclaresTheArchivalServiceAsGoogleMessagesRequires() {
        val m = manifest()
        val permissions = m.children("uses-permission").map { it.getAttributeNS(androidNs, "name") }.toSet()
        for (p in listOf("android.permission.READ_SMS", "android.permission.FOREGROUND_SERVICE")) {
            assertTrue(p in permissions, "missing <uses-permission> $p")
        }
        val services = m.children("service").associateBy { it.getAttributeNS(androidNs, "name") }
        val archival = services.getValue("com.verbatim.agent.android.telephony.ArchivalService")
        // Exported for Google Messages, but only the default SMS app (WRITE_SMS) can start it.
        assertEquals("true", archival.getAttributeNS(androidNs, "exported"))
        assertEquals("android.permission.WRITE_SMS", archival.getAttributeNS(androidNs, "permission"))
        assertEquals("shortService", archival.getAttributeNS(androidNs, "foregroundServiceType"))
        val actions = (0 until archival.getElementsByTagName("action").length)
            .map { (archival.getElementsByTagName("action").item(it) as Element).getAttributeNS(androidNs, "name") }
        assertEquals(listOf("GOOGLE_MESSAGES_ARCHIVAL_UPDATE"), actions)
        assertTrue(android.app.Service::class.java.isAssignableFrom(Class.forName(archival.getAttributeNS(androidNs, "name"))))
        val job = services.getValue("com.verbatim.agent.android.telephony.ReconciliationJobService")
        assertEquals("android.permission.BIND_JOB_SERVICE", job.getAttributeNS(androidNs, "permission"))
        assertEquals("false", job.getAttributeNS(androidNs, "exported"))
        assertTrue(JobService::class.java.isAssignableFrom(Class.forName(job.getAttributeNS(androidNs, "name"))))
    }

    /** `-keep` rules of consumer-rules.pro: a class name pattern, an optional `implements`/`extends`, members kept or not. */
    private data class KeepRule(val classPattern: String, val inherits: String?, val keepsAllMembers: Boolean)

    private fun keepRules(): List<KeepRule> {
        val text = root.resolve("android/consumer-rules.pro").readLines()
            .map { it.substringBefore('#').trim() }.filter { it.isNotEmpty() }.joinToString(" ")
        val rule = Regex("""-keep(?:,\s*\w+)*\s+(?:class|interface)\s+(\S+)(?:\s+(?:implements|extends)\s+(\S+))?\s*(\{[^}]*\})?""")
        return rule.findAll(text).map { m ->
            KeepRule(m.groupValues[1], m.groupValues[2].ifEmpty { null }, m.groupValues[3].replace(" ", "") == "{*;}")
        }.toList()
    }

    /** ProGuard class name wildcards: `**` any characters, `*` any but a package separator. */
    private fun matches(pattern: String, name: String): Boolean {
        val regex = pattern.split("**").joinToString(".*") { part -> part.split("*").joinToString("[^.]*") { Regex.escape(it) } }
        return Regex(regex).matches(name)
    }

    private fun kept(cls: Class<*>, rules: List<KeepRule>): Boolean = rules.any { r ->
        r.keepsAllMembers && if (r.inherits == null) {
            matches(r.classPattern, cls.name)
        } else {
            r.classPattern == "*" && generateSequence<Class<*>>(cls) { it.superclass }
                .flatMap { sequenceOf(it) + it.interfaces.asSequence() }
                .any { matches(r.inherits, it.name) }
        }
    }

    @Test
    fun everyClassTheBindingsRegisterWithJnaIsKeptWithItsMembers() {
        val rules = keepRules()
        assertTrue(rules.isNotEmpty(), "no -keep rules parsed from consumer-rules.pro")
        val loader = javaClass.classLoader
        val classesDir = File(System.getProperty("verbatim.classes.dir") ?: error("verbatim.classes.dir is not set (android/pom.xml sets it)"))
        val jnaTypes = listOf("com.sun.jna.Structure", "com.sun.jna.Callback", "com.sun.jna.Library").map { Class.forName(it, false, loader) }
        // Both UniFFI components: com.verbatim.ffi and com.verbatim.ffi.core.
        val registered = classesDir.resolve("com/verbatim/ffi").walk().filter { it.name.endsWith(".class") }
            .map { Class.forName(it.relativeTo(classesDir).path.removeSuffix(".class").replace(File.separatorChar, '.'), false, loader) }
            .toList()
            .filter { c -> jnaTypes.any { it.isAssignableFrom(c) } || c.declaredMethods.any { Modifier.isNative(it.modifiers) } }
        assertTrue(registered.size > 10, "expected the bindings' JNA structures and callbacks, found ${registered.map { it.name }}")
        // Structures and callbacks by type; the library's functions through Native.register
        // (direct mapping: JNA binds the `external` methods of these classes by name).
        for (type in jnaTypes.take(2)) assertTrue(registered.any { type.isAssignableFrom(it) }, "no ${type.name} found in the bindings")
        assertTrue(registered.any { c -> c.declaredMethods.any { Modifier.isNative(it.modifiers) } }, "no directly mapped class found")
        val notKept = registered.filter { !kept(it, rules) }.map { it.name }
        assertEquals(emptyList(), notKept, "registered with JNA but not kept by consumer-rules.pro")
        // JNA itself (its Native and Structure reflection) and our JNI entry point.
        assertTrue(kept(Class.forName("com.sun.jna.Native", false, loader), rules), "JNA is not kept")
        assertNotNull(rules.firstOrNull { matches(it.classPattern, "com.verbatim.agent.android.UploadJobService") }, "the JobService is not kept")
    }
}
