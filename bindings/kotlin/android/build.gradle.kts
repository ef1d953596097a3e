// The Android library module of Tandem's Kotlin binding: builds
// build/outputs/aar/tandem-android-release.aar from
//   - the Kotlin sources of ../src/main/kotlin (generated tandem.kt, Extensions.kt and the typed
//     layer), used in place through sourceSets: there is one copy of them, the JVM build's;
//   - the per-ABI libtandem.so that build-aar.sh builds with cargo-ndk (16 KB page alignment,
//     checked by the script) into <cargo target dir>/android/jniLibs/<abi>/, packaged by AGP as
//     jni/<abi>/libtandem.so;
//   - consumer-rules.pro, the R8 keep rules applied to every app that uses the AAR.
//
// NOT RUN: no machine of this project has the Android SDK or NDK, so this file has never been
// evaluated by Gradle. Use build-aar.sh (it builds the native libraries, checks them, then runs
// `assembleRelease` here with -Ptandem.jniLibsDir=...).
//
// Plugin choice: AGP 8.13 with the separate Kotlin Android plugin. AGP 9 compiles Kotlin itself
// and refuses org.jetbrains.kotlin.android unless built-in Kotlin is turned off; moving to it
// means dropping that plugin line.

import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    id("com.android.library") version "8.13.2"
    // The Kotlin version of ../pom.xml (kotlin.version): the same compiler and kotlin-reflect as
    // the JVM build.
    id("org.jetbrains.kotlin.android") version "2.4.21"
}

// Keep these equal to ../pom.xml's properties (kotlin.version, jna.version, coroutines.version).
val kotlinVersion = "2.4.21"
val jnaVersion = "5.19.1"
val coroutinesVersion = "1.11.0"

// cargo-ndk's output directory (<dir>/<abi>/libtandem.so). build-aar.sh passes it; the default is
// the repository's own target directory.
val jniLibsDir: File = providers.gradleProperty("tandem.jniLibsDir")
    .map { file(it) }
    .getOrElse(file("../../../target/android/jniLibs"))

android {
    namespace = "dev.tandem"
    compileSdk = 35

    defaultConfig {
        minSdk = 24
        consumerProguardFiles("consumer-rules.pro")
    }

    sourceSets {
        getByName("main") {
            kotlin.srcDir("../src/main/kotlin")
            jniLibs.srcDir(jniLibsDir)
        }
    }

    buildTypes {
        release {
            // The library itself is not shrunk; the app's R8 applies consumer-rules.pro.
            isMinifyEnabled = false
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
        // The typed layer reads and writes timestamps as java.time.Instant (API 26); on API 24
        // and 25 it exists only through core library desugaring. AGP records this in the AAR's
        // metadata, so an app using the AAR must enable desugaring too.
        isCoreLibraryDesugaringEnabled = true
    }
}

kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
    }
}

dependencies {
    // `api`: the public API shows their types (the generated RustBuffer extends JNA's Structure,
    // the change streams are kotlinx.coroutines.flow.Flow).
    // The AAR flavour of JNA carries its own libjnidispatch.so under jni/<abi>/, where Android's
    // loader finds it.
    api("net.java.dev.jna:jna:$jnaVersion@aar")
    api("org.jetbrains.kotlinx:kotlinx-coroutines-core:$coroutinesVersion")
    // The typed layer reads model classes with kotlin-reflect (no compiler plugin).
    implementation("org.jetbrains.kotlin:kotlin-reflect:$kotlinVersion")
    coreLibraryDesugaring("com.android.tools:desugar_jdk_libs:2.1.5")
}
