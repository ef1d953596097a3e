// The client under test is the real realm-core 14.12.0, loaded from the cinterop jar's .so.

package dev.tandem.realmcompat

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

@Timeout(value = 60, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class LibraryTest : CompatTest() {
    @Test
    fun `the native library is realm-core 14_12_0`() {
        assertEquals(EXPECTED_CORE_VERSION, realmCoreVersion())
    }
}
