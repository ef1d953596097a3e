//! `tandem-server`: the self-hostable sync server.
//!
//! Settings come from flags, environment variables and a TOML file (see
//! [`tandem::server::config`] or run `tandem-server --help`).

use std::io::Write;

use tandem::server::app::admin as api_keys;
use tandem::server::config::{self, ApiKeyAction, Command};
use tandem::server::ops::init_logging;
use tandem::server::{admin, start, RunningServer, ServerConfig};

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
        Command::ApiKey {
            data_dir,
            app_id,
            database,
            action,
        } => {
            let at = match &database {
                Some(url) => api_keys::StoreAt::Database(url),
                None => api_keys::StoreAt::DataDir(&data_dir),
            };
            api_key(at, app_id.as_deref(), action);
            return;
        }
        Command::Admin { data_dir, command } => {
            let mut out = std::io::stdout().lock();
            if let Err(e) = admin::run(&data_dir, &command, &mut out) {
                eprintln!("tandem-server admin: {e}");
                std::process::exit(1);
            }
            return;
        }
        Command::Serve(config) => config,
    };
    init_logging(
        config.observability.log_format,
        config.observability.log_level,
    );
    let settings = Startup::of(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("cannot start the runtime: {e}")));
    runtime.block_on(async move {
        let server = start(config).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot start");
            fail(&e.to_string())
        });
        settings.log(&server);
        let signal = shutdown_signal().await;
        tracing::info!(
            signal,
            "shutting down: no new connections, closing sessions"
        );
        let clean = server.shutdown_graceful(SHUTDOWN_DEADLINE).await;
        if !clean {
            tracing::warn!(
                connections = server.connections(),
                seconds = SHUTDOWN_DEADLINE.as_secs(),
                "connections still open at the shutdown deadline"
            );
        }
    });
}

/// How long a graceful shutdown waits for connections to end.
const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits for SIGTERM or SIGINT (Ctrl-C); its name.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// `tandem-server api-key ...`: prints the new key once (only its hash is stored), the list as
/// `<id> <enabled|disabled> <name>` lines, or nothing on a successful delete.
fn api_key(at: api_keys::StoreAt<'_>, app_id: Option<&str>, action: ApiKeyAction) {
    let mut out = std::io::stdout();
    match action {
        ApiKeyAction::Create { name } => {
            let new = api_keys::create_api_key(at, app_id, &name)
                .unwrap_or_else(|e| fail(&e.to_string()));
            eprintln!(
                "created server API key {} ({name}); it is shown only now:",
                new.info.id
            );
            let _ = writeln!(out, "{}", new.key);
        }
        ApiKeyAction::List => {
            let keys = api_keys::list_api_keys(at, app_id).unwrap_or_else(|e| fail(&e.to_string()));
            for key in keys {
                let state = if key.disabled { "disabled" } else { "enabled" };
                let _ = writeln!(out, "{} {state} {}", key.id, key.name);
            }
        }
        ApiKeyAction::Delete { id } => {
            let existed =
                api_keys::delete_api_key(at, app_id, &id).unwrap_or_else(|e| fail(&e.to_string()));
            if !existed {
                fail(&format!("no server API key {id}"));
            }
        }
    }
}

/// What the start-up log line reports (never a key, secret or token: only where they are).
struct Startup {
    data_dir: String,
    tls: bool,
    app_id: Option<String>,
    max_body: usize,
    idle_timeout_secs: u64,
    token_algorithm: String,
}

impl Startup {
    fn of(config: &ServerConfig) -> Startup {
        Startup {
            data_dir: config.data_dir.display().to_string(),
            tls: config.tls.is_some(),
            app_id: config.app.as_ref().map(|a| a.app_id.clone()),
            max_body: config.limits.max_body,
            idle_timeout_secs: config.idle_timeout.as_secs(),
            token_algorithm: format!("{:?}", config.auth.algorithm()),
        }
    }

    fn log(&self, server: &RunningServer) {
        tracing::info!(
            listen = %server.local_addr,
            data_dir = %self.data_dir,
            tls = self.tls,
            app_id = self.app_id.as_deref().unwrap_or("-"),
            max_body = self.max_body,
            idle_timeout_secs = self.idle_timeout_secs,
            token_algorithm = %self.token_algorithm,
            metrics = %server
                .metrics_addr
                .map_or_else(|| "off".to_owned(), |a| a.to_string()),
            "tandem-server listening on {}",
            server.local_addr
        );
    }
}
