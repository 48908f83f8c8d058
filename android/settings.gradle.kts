// The Verbatim Android library as a standalone Gradle build (rooted here, inside the Cargo
// workspace one level up). An app can also include it: `includeBuild("path/to/verbatim/android")`
// or copy the module. See README.md.

pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
        // The Kotlin half of rustls-platform-verifier (Android certificate verification) is
        // published only here, as a Maven repository in the rustls GitHub project; scoped to its
        // one group so nothing else is ever resolved from it. Its version is read from
        // ../Cargo.lock in build.gradle.kts.
        maven("https://github.com/rustls/rustls-platform-verifier/raw/maven-archive/android-release-support/maven/") {
            name = "RustlsPlatformVerifier"
            content { includeGroup("org.rustls") }
        }
    }
}

rootProject.name = "verbatim-android"
