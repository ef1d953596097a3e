// The Gradle build of Tandem's Android library (AAR): one project, this directory. It compiles
// the Kotlin sources of ../src/main/kotlin (the JVM binding's, not copied) and packages the
// per-ABI libtandem.so that build-aar.sh builds with cargo-ndk.
//
// NOT RUN: no machine of this project has the Android SDK, so this build has never been
// configured or run. Needs Gradle 8.13+ (Android Gradle plugin 8.13) on JDK 17+, and the SDK
// (ANDROID_HOME or sdk.dir in local.properties). Run it through build-aar.sh, which builds the
// native libraries first.

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
    }
}

// The AAR is build/outputs/aar/tandem-android-release.aar.
rootProject.name = "tandem-android"
