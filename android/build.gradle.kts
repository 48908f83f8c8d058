// The Verbatim Android library (AAR): the Rust agent (libverbatim_ffi.so per ABI, built with
// cargo-ndk), its UniFFI Kotlin bindings (generated at build time, never committed), and the thin
// Kotlin wrappers in src/main/kotlin.
//
//   gradle -p android assembleRelease      ->  android/build/outputs/aar/verbatim-android-release.aar
//
//   gradle -p android publishReleasePublicationToMavenLocal   (or ...ToReleaseRepository, see below)
//
// Needs: the Android SDK (ANDROID_HOME) with the pinned NDK (verbatim.ndkVersion in
// gradle.properties, installed with `sdkmanager "ndk;<version>"`), Rust with the three Android
// targets, and cargo-ndk (see README.md). Honours CARGO_TARGET_DIR like cargo does.

import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    id("com.android.library") version "8.7.3"
    id("org.jetbrains.kotlin.android") version "2.1.0"
    `maven-publish`
}

val workspace: File = rootDir.parentFile // the Cargo workspace (android/..)
// Where cargo writes, as cargo itself decides it: CARGO_TARGET_DIR (relative to the workspace)
// or the workspace's target/.
val cargoTargetDir: File = providers.environmentVariable("CARGO_TARGET_DIR").orNull
    ?.let { workspace.resolve(it) } ?: workspace.resolve("target")
val abis: List<String> = providers.gradleProperty("verbatim.abis").get().split(",").map { it.trim() }
val cargoProfile: String = providers.gradleProperty("verbatim.cargoProfile").get()
val rustJniLibs = layout.buildDirectory.dir("rustJniLibs")
val uniffiKotlin = layout.buildDirectory.dir("generated/source/uniffi/kotlin")

android {
    namespace = "com.verbatim.agent"
    compileSdk = 35
    // Pinned: the NDK links libverbatim_ffi.so (through cargo-ndk). r27c; its clang and lld
    // accept -z max-page-size=16384, which bindings/build.rs passes for Google Play's 16 KB pages.
    ndkVersion = providers.gradleProperty("verbatim.ndkVersion").get()

    defaultConfig {
        minSdk = 26
        consumerProguardFiles("consumer-rules.pro")
        ndk { abiFilters += abis }
    }

    buildTypes {
        release { isMinifyEnabled = false } // the app minifies, with consumer-rules.pro
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    // A release AAR plus its sources jar, for the publication below.
    publishing {
        singleVariant("release") { withSourcesJar() }
    }

    sourceSets["main"].apply {
        // Wrappers (platform-neutral + Android), the androidx.enterprise publisher, the bindings.
        java.srcDirs("src/main/kotlin", "src/enterprise/kotlin", uniffiKotlin)
        jniLibs.srcDir(rustJniLibs)
    }
}

kotlin {
    compilerOptions { jvmTarget.set(JvmTarget.JVM_17) }
}

// ---------------------------------------------------------------------------------- Rust

/** The Rust sources whose change must rebuild the native library. */
fun rustInputs() = files(
    fileTree(workspace.resolve("core")) { include("src/**", "Cargo.toml", "uniffi.toml") },
    fileTree(workspace.resolve("bindings")) { include("src/**", "Cargo.toml", "uniffi.toml", "build.rs") },
    workspace.resolve("Cargo.toml"),
    workspace.resolve("Cargo.lock"),
)

// libverbatim_ffi.so for every ABI, stripped release build (root [profile.release]), API 26,
// linked by the pinned NDK with 16 KB-aligned LOAD segments (bindings/build.rs).
val cargoNdkBuild by tasks.registering(Exec::class) {
    description = "Builds libverbatim_ffi.so for ${abis.joinToString()} with cargo-ndk."
    workingDir = workspace
    // cargo-ndk finds the NDK here: the pinned one, not whichever is newest on the machine.
    doFirst { environment("ANDROID_NDK_HOME", android.ndkDirectory.absolutePath) }
    inputs.files(rustInputs())
    outputs.dir(rustJniLibs)
    val targets = abis.flatMap { listOf("-t", it) }
    commandLine(
        listOf("cargo", "ndk") + targets + listOf(
            "--platform", "26",
            "-o", rustJniLibs.get().asFile.absolutePath,
            "build", "--locked", "--profile", cargoProfile, "-p", "verbatim-ffi",
        ),
    )
}

// The Kotlin bindings, generated in library mode from an unstripped host build of the same
// crate (uniffi-bindgen reads the metadata from the symbol table, which the stripped Android
// release libraries no longer have; the metadata is the same on every target).
val generateUniffiBindings by tasks.registering(Exec::class) {
    description = "Generates the UniFFI Kotlin bindings (package com.verbatim.ffi)."
    workingDir = workspace
    inputs.files(rustInputs())
    outputs.dir(uniffiKotlin)
    val os = System.getProperty("os.name").lowercase()
    val hostLib = when {
        os.contains("mac") -> "libverbatim_ffi.dylib"
        os.contains("win") -> "verbatim_ffi.dll"
        else -> "libverbatim_ffi.so"
    }
    val out = uniffiKotlin.get().asFile.absolutePath
    commandLine(
        "cargo", "run", "--locked", "-p", "verbatim-ffi", "--features", "cli", "--bin", "uniffi-bindgen", "--",
        "generate", "--library", cargoTargetDir.resolve("debug/$hostLib").absolutePath,
        "--language", "kotlin", "--out-dir", out,
    )
}

tasks.named("preBuild") { dependsOn(cargoNdkBuild, generateUniffiBindings) }

// ---------------------------------------------------------------------------------- deps

// rustls-platform-verifier's Kotlin half must be the version its Rust half was built against:
// the `rustls-platform-verifier-android` entry of the workspace's Cargo.lock (the crate exists
// only to carry that version). Read at configuration time, cached with the lock file.
abstract class RustlsVerifierVersion : ValueSource<String, RustlsVerifierVersion.Params> {
    interface Params : ValueSourceParameters {
        val lockFile: RegularFileProperty
    }

    override fun obtain(): String {
        val lines = parameters.lockFile.get().asFile.readLines()
        val at = lines.indexOfFirst { it.trim() == "name = \"rustls-platform-verifier-android\"" }
        require(at >= 0) { "rustls-platform-verifier-android not found in Cargo.lock" }
        return lines.drop(at + 1).first { it.trim().startsWith("version = ") }.substringAfter('"').substringBefore('"')
    }
}

val rustlsVerifierVersion = providers.of(RustlsVerifierVersion::class.java) {
    parameters.lockFile.set(layout.projectDirectory.file("../Cargo.lock"))
}

// As rustls-platform-verifier's README prescribes: declared without a version, pinned here.
configurations.configureEach {
    resolutionStrategy.eachDependency {
        if (requested.group == "org.rustls" && requested.name == "rustls-platform-verifier") {
            useVersion(rustlsVerifierVersion.get())
            because("the Kotlin half must match the rustls-platform-verifier-android version in Cargo.lock")
        }
    }
}

dependencies {
    // UniFFI's Kotlin calls the native library through JNA; the AAR carries libjnidispatch.so.
    implementation("net.java.dev.jna:jna:5.19.1@aar")
    // The generated bindings suspend on Rust futures; the wrappers use Dispatchers.Main.
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.10.2")
    // UniFFI's Android object cleaner (android = true in bindings/uniffi.toml) uses @RequiresApi.
    implementation("androidx.annotation:annotation:1.9.1")
    // MDM feedback channel (keyed app states): KeyedAppStatesPublisher.
    implementation("androidx.enterprise:enterprise-feedback:1.1.0")
    // Android certificate verification for the archive's TLS (called from Rust over JNI).
    implementation("org.rustls:rustls-platform-verifier")
}

// ---------------------------------------------------------------------------------- publishing

// The AAR as a Maven artifact: com.verbatim:verbatim-android:<workspace version>, with its POM
// (dependencies included, as the AAR needs them at run time) and a sources jar.
//   gradle -p android publishReleasePublicationToMavenLocal
//   gradle -p android publishReleasePublicationToReleaseRepository \
//       -Pverbatim.publishUrl=https://maven.example/releases   (credentials: verbatim.publishUser
//       and verbatim.publishPassword in ~/.gradle/gradle.properties, never in this repository)
val workspaceVersion: String = workspace.resolve("Cargo.toml").readLines()
    .dropWhile { it.trim() != "[workspace.package]" }
    .first { it.trim().startsWith("version = ") }.substringAfter('"').substringBefore('"')

publishing {
    publications {
        register<MavenPublication>("release") {
            groupId = "com.verbatim"
            artifactId = "verbatim-android"
            version = workspaceVersion
            afterEvaluate { from(components["release"]) }
            pom {
                name.set("Verbatim for Android")
                description.set("On-device compliance capture agent: the Rust core, its Kotlin bindings and the Android glue.")
                licenses {
                    license {
                        name.set("Apache-2.0")
                        url.set("https://www.apache.org/licenses/LICENSE-2.0")
                    }
                }
            }
        }
    }
    repositories {
        providers.gradleProperty("verbatim.publishUrl").orNull?.let { url ->
            maven {
                name = "Release"
                setUrl(url)
                credentials {
                    username = providers.gradleProperty("verbatim.publishUser").orNull
                    password = providers.gradleProperty("verbatim.publishPassword").orNull
                }
            }
        }
    }
}
