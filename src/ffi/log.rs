//! Routes the library's `tracing` events to the app's logger (`set_log_listener`).
//!
//! A small `tracing::Subscriber` is installed as the process's global default on the first
//! call; later calls replace the listener and level. It forwards each event's level, target
//! (the module, e.g. `tandem::client::connection`) and message (the `message` field, then the
//! other fields as `name=value`). Spans are not tracked (the library logs events only).
//!
//! No event is lost silently: an event the app's listener throws on is written to stderr with
//! the listener's error, and so is an event logged on a thread while that thread is inside the
//! listener (a listener that calls back into the library must not recurse into itself). After
//! `close_callbacks` (the Python package's interpreter exit) the listener is no longer called:
//! warnings and errors go to stderr, the rest is dropped.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

use super::foreign::Foreign;
use super::types::{CallbackError, TandemError};

/// A log level, most severe first (`tracing::Level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, uniffi::Enum)]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something unexpected that the library handled.
    Warn,
    /// A notable event (connection state, clock offset...).
    Info,
    /// Detail for debugging.
    Debug,
    /// Fine detail.
    Trace,
}

impl LogLevel {
    fn of(level: &tracing::Level) -> Self {
        match *level {
            tracing::Level::ERROR => LogLevel::Error,
            tracing::Level::WARN => LogLevel::Warn,
            tracing::Level::INFO => LogLevel::Info,
            tracing::Level::DEBUG => LogLevel::Debug,
            _ => LogLevel::Trace,
        }
    }
}

/// Receives the library's log events. Called on the thread that logged (any of the library's
/// threads); keep it quick and do not block.
#[uniffi::export(foreign)]
pub trait LogListener: Send + Sync {
    /// One event: its level, target (module path) and message.
    fn on_log(&self, level: LogLevel, target: String, message: String)
        -> Result<(), CallbackError>;
}

struct Route {
    listener: Arc<Foreign<dyn LogListener>>,
    level: LogLevel,
}

struct Forwarder {
    route: Mutex<Option<Route>>,
    next_span: std::sync::atomic::AtomicU64,
}

/// The installed forwarder, or `None` if the process had another global subscriber.
static FORWARDER: OnceLock<Option<Arc<Forwarder>>> = OnceLock::new();

thread_local! {
    static IN_LISTENER: Cell<bool> = const { Cell::new(false) };
}

/// Collects an event's message and other fields.
#[derive(Default)]
struct Message {
    message: String,
    fields: String,
}

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl Forwarder {
    fn level(&self) -> Option<LogLevel> {
        self.route
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|r| r.level)
    }
}

/// The global subscriber: a handle on the forwarder.
struct Global(Arc<Forwarder>);

impl Subscriber for Global {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.0
            .level()
            .is_some_and(|max| LogLevel::of(metadata.level()) <= max)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        use tracing::level_filters::LevelFilter;
        Some(match self.0.level() {
            None => LevelFilter::OFF,
            Some(LogLevel::Error) => LevelFilter::ERROR,
            Some(LogLevel::Warn) => LevelFilter::WARN,
            Some(LogLevel::Info) => LevelFilter::INFO,
            Some(LogLevel::Debug) => LevelFilter::DEBUG,
            Some(LogLevel::Trace) => LevelFilter::TRACE,
        })
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(
            self.0
                .next_span
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .max(1),
        )
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut message = Message::default();
        event.record(&mut message);
        let text = format!("{}{}", message.message, message.fields);
        let metadata = event.metadata();
        let level = LogLevel::of(metadata.level());
        let target = metadata.target().to_owned();
        let listener = self
            .0
            .route
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|r| Arc::clone(&r.listener));
        let Some(listener) = listener else {
            return;
        };
        if IN_LISTENER.with(Cell::get) {
            eprintln!("tandem: {level:?} {target}: {text} (logged inside the log listener)");
            return;
        }
        IN_LISTENER.with(|f| f.set(true));
        let result = listener.call(|l| l.on_log(level, target.clone(), text.clone()));
        IN_LISTENER.with(|f| f.set(false));
        match result {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                eprintln!("tandem: the log listener threw ({e}) on: {level:?} {target}: {text}")
            }
            // `close_callbacks` ran: the app's runtime is shutting down.
            None if level <= LogLevel::Warn => eprintln!("tandem: {level:?} {target}: {text}"),
            None => {}
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Sends the library's log events at `level` and more severe to `listener` (replacing any
/// earlier listener). The first call installs the library's `tracing` subscriber as the
/// process's global default; if the process already has another one (a Rust host that set up
/// its own logging), this fails with `InvalidArgument` and that subscriber keeps the events.
#[uniffi::export]
pub fn set_log_listener(
    listener: Arc<dyn LogListener>,
    level: LogLevel,
) -> Result<(), TandemError> {
    let forwarder = FORWARDER.get_or_init(|| {
        let forwarder = Arc::new(Forwarder {
            route: Mutex::new(None),
            next_span: std::sync::atomic::AtomicU64::new(1),
        });
        tracing::subscriber::set_global_default(Global(Arc::clone(&forwarder)))
            .is_ok()
            .then_some(forwarder)
    });
    let Some(forwarder) = forwarder else {
        return Err(TandemError::InvalidArgument {
            message: "the process already has a global tracing subscriber; \
                      the library's events go there"
                .into(),
        });
    };
    let listener = Arc::new(Foreign::new(listener));
    *forwarder.route.lock().unwrap_or_else(|e| e.into_inner()) = Some(Route { listener, level });
    crate::LOG_LISTENER_CLEARED.store(false, std::sync::atomic::Ordering::Relaxed);
    // Levels are cached per call site: make them see the new level.
    tracing::callsite::rebuild_interest_cache();
    Ok(())
}

/// Stops sending log events to the app. As with no listener at all, the library's warnings
/// that must not be lost (a listener that threw, a notifier fault) go to stderr, and the rest
/// are dropped.
#[uniffi::export]
pub fn clear_log_listener() {
    if let Some(Some(forwarder)) = FORWARDER.get() {
        crate::LOG_LISTENER_CLEARED.store(true, std::sync::atomic::Ordering::Relaxed);
        forwarder
            .route
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        tracing::callsite::rebuild_interest_cache();
    }
}
