//! The PostgreSQL cluster of the tests and benchmarks that need one (`tests/postgres.rs`,
//! `benches/postgres.rs`): `TANDEM_TEST_POSTGRES`, else the throwaway cluster
//! `tests/postgres/start.sh` starts; a fresh database per test.

use std::process::Command;

/// The test cluster's URL.
pub fn cluster() -> String {
    if let Ok(url) = std::env::var("TANDEM_TEST_POSTGRES") {
        return url;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/postgres/start.sh");
    let out = Command::new(script)
        .output()
        .expect("running tests/postgres/start.sh");
    assert!(
        out.status.success(),
        "tests/postgres/start.sh failed (set TANDEM_TEST_POSTGRES to a database URL instead):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A fresh database named after the test; its URL.
pub fn database(runtime: &tokio::runtime::Runtime, name: &str) -> String {
    let base = cluster();
    let db = format!("tandem_{name}_{}", std::process::id());
    runtime.block_on(async {
        let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .expect("connecting to the test cluster");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
            .await
            .unwrap();
        client
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
    });
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{db}")
}
