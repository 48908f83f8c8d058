package com.verbatim.agent

import com.verbatim.ffi.PolicyValue

/**
 * Turns platform configuration values (a restrictions `Bundle` already flattened to maps and
 * lists, a JSON object, a test's `mapOf(...)`) into the neutral tree the agent validates.
 *
 * Conversion only, no validation: every value keeps its type when the tree has one for it, so
 * the Rust core can name the key of any mistake (a number where a list belongs, a fraction where
 * an integer belongs). A `Double` or `Float` passes as `PolicyValue.Real`, unchanged: the core
 * alone decides (a whole real is accepted where an integer belongs), the same rule as on iOS and
 * in `verbatim policy check`. `null` means "absent" (a key left unset in the MDM console).
 * The shared table `core/tests/data/policy-value-conversions.json` is run against this code by
 * the JVM tests.
 */
object PolicyTree {
    /** The whole managed configuration: a dictionary of keys. */
    @JvmStatic
    fun from(config: Map<String, *>): PolicyValue = PolicyValue.Dict(entries(config))

    /** One value; `null` for an absent one. */
    @JvmStatic
    fun value(v: Any?): PolicyValue? = when (v) {
        null -> null
        is PolicyValue -> v
        is String -> PolicyValue.Text(v)
        is Boolean -> PolicyValue.Bool(v)
        is Int -> PolicyValue.Integer(v.toLong())
        is Long -> PolicyValue.Integer(v)
        is Short -> PolicyValue.Integer(v.toLong())
        is Byte -> PolicyValue.Integer(v.toLong())
        is Double -> PolicyValue.Real(v)
        is Float -> PolicyValue.Real(v.toDouble())
        is Map<*, *> -> PolicyValue.Dict(entries(v))
        is Iterable<*> -> PolicyValue.Items(v.mapNotNull(::value))
        is Array<*> -> PolicyValue.Items(v.mapNotNull(::value))
        is IntArray -> PolicyValue.Items(v.map { PolicyValue.Integer(it.toLong()) })
        is LongArray -> PolicyValue.Items(v.map { PolicyValue.Integer(it) })
        is BooleanArray -> PolicyValue.Items(v.map { PolicyValue.Bool(it) })
        is DoubleArray -> PolicyValue.Items(v.map { PolicyValue.Real(it) })
        is CharSequence -> PolicyValue.Text(v.toString())
        // Anything else (a Char, a BigDecimal) as its text: the core rejects it by key if the key
        // wants another type, rather than this layer guessing.
        else -> PolicyValue.Text(v.toString())
    }

    private fun entries(map: Map<*, *>): Map<String, PolicyValue> {
        val out = LinkedHashMap<String, PolicyValue>(map.size)
        for ((k, v) in map) {
            if (k == null) continue
            value(v)?.let { out[k.toString()] = it }
        }
        return out
    }
}
