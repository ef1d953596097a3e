//! The `uniffi-bindgen` matching this crate's uniffi version: generates the Kotlin, Swift and
//! Python bindings from the built library (`cargo run --features bindgen --bin uniffi-bindgen
//! -- generate --library target/debug/libtandem.so --language python --out-dir ...`).

fn main() {
    uniffi::uniffi_bindgen_main()
}
