//! `tandem-server`: the self-hostable sync server.
//!
//! Settings come from flags, environment variables and a TOML file (see
//! [`tandem::server::config`] or run `tandem-server --help`).

use std::io::Write;

use tandem::server::config::{self, Command};
use tandem::server::start;

fn fail(message: &str) -> ! {
    eprintln!("tandem-server: {message}\nRun tandem-server --help for the options.");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = config::parse(&args, |name| std::env::var(name).ok())
        .unwrap_or_else(|e| fail(&e.to_string()));
    let config = match command {
        Command::Help => {
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{}", config::HELP);
            return;
        }
        Command::IssueToken {
            signer,
            subject,
            paths,
            valid_for,
        } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
            let token = signer
                .sign(&subject, now + valid_for.as_secs(), &paths)
                .unwrap_or_else(|e| fail(&e.to_string()));
            let _ = writeln!(std::io::stdout(), "{token}");
            return;
        }
        Command::Serve(config) => config,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("cannot start the runtime: {e}")));
    runtime.block_on(async move {
        let server = start(config).await.unwrap_or_else(|e| fail(&e.to_string()));
        eprintln!("tandem-server listening on {}", server.local_addr);
        std::future::pending::<()>().await;
    });
}
