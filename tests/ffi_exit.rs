//! `close_callbacks`, what the Python package runs at interpreter exit: no library thread calls
//! foreign code afterwards, calls in progress are waited for, and foreign objects the library
//! lets go are leaked instead of released. It closes the gate for the whole process, so it has
//! this test binary to itself (one test).
#![cfg(feature = "ffi")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tandem::ffi::{
    close_callbacks, CallbackError, ClassSpec, Collection, Database, Key, ObjectChange,
    ObjectListener, PropertySpec, PropertyType, Value, WriteOp,
};

/// Counts its calls; the first one signals `entered` and blocks until `release`.
struct Listener {
    calls: AtomicUsize,
    entered: Mutex<Sender<()>>,
    release: Mutex<Receiver<()>>,
    dropped: Arc<AtomicBool>,
}

impl ObjectListener for Listener {
    fn on_change(&self, _: ObjectChange) -> Result<(), CallbackError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = self.entered.lock().unwrap().send(());
            let _ = self.release.lock().unwrap().recv();
        }
        Ok(())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

fn listener() -> (Arc<Listener>, Receiver<()>, Sender<()>, Arc<AtomicBool>) {
    let (entered, on_entered) = channel();
    let (release, on_release) = channel();
    let dropped = Arc::new(AtomicBool::new(false));
    let listener = Arc::new(Listener {
        calls: AtomicUsize::new(0),
        entered: Mutex::new(entered),
        release: Mutex::new(on_release),
        dropped: Arc::clone(&dropped),
    });
    (listener, on_entered, release, dropped)
}

fn set_title(title: &str) -> WriteOp {
    WriteOp::Set {
        class_name: "Task".into(),
        key: Key::Int { value: 1 },
        property: "title".into(),
        value: Value::String {
            value: title.into(),
        },
        path: Default::default(),
    }
}

#[test]
fn close_callbacks_waits_for_calls_in_progress_then_ends_them_for_good() {
    let dir = tempfile::Builder::new()
        .prefix("tandem-ffi-exit-")
        .tempdir()
        .unwrap();
    let prop = |name: &str, property_type| PropertySpec {
        name: name.into(),
        property_type,
        nullable: false,
        collection: Collection::Single,
        link_target: None,
        indexed: false,
    };
    let classes = vec![ClassSpec {
        name: "Task".into(),
        primary_key: Some("_id".into()),
        properties: vec![
            prop("_id", PropertyType::Int),
            prop("title", PropertyType::String),
        ],
    }];
    let db = Database::open(
        dir.path().join("db.sqlite").to_string_lossy().into(),
        classes,
    )
    .unwrap();
    db.write(vec![WriteOp::Create {
        class_name: "Task".into(),
        key: Key::Int { value: 1 },
        values: HashMap::from([(
            "title".into(),
            Value::String {
                value: "first".into(),
            },
        )]),
    }])
    .unwrap();
    let observe = |l: Arc<Listener>| {
        db.observe_object("Task".into(), Key::Int { value: 1 }, l, vec![])
            .unwrap()
    };

    // Before: letting a listener go releases it.
    let (early, _, _, early_dropped) = listener();
    let handle = observe(early);
    handle.cancel();
    // (on this thread, or on the notifier's if it was evaluating the first write just then)
    let deadline = Instant::now() + Duration::from_secs(10);
    while !early_dropped.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the listener was never released");
        std::thread::sleep(Duration::from_millis(10));
    }

    // A listener call in progress on the notifier thread holds close_callbacks up...
    let (blocking, entered, release, dropped) = listener();
    let handle = observe(Arc::clone(&blocking) as Arc<Listener>);
    db.write(vec![set_title("second")]).unwrap();
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the listener is called");
    let started = Instant::now();
    assert!(!close_callbacks(200), "a call is still in progress");
    assert!(started.elapsed() >= Duration::from_millis(200));
    // ...until it returns.
    let closing = std::thread::spawn(|| close_callbacks(10_000));
    std::thread::sleep(Duration::from_millis(50));
    release.send(()).unwrap();
    assert!(closing.join().unwrap(), "the call returned");

    // After: listeners are no longer called...
    db.write(vec![set_title("third")]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(blocking.calls.load(Ordering::SeqCst), 1);
    // ...nor released when the library lets them go (the foreign runtime is going away).
    drop(blocking);
    handle.cancel();
    drop(handle);
    std::thread::sleep(Duration::from_millis(100));
    assert!(!dropped.load(Ordering::SeqCst));
    assert!(close_callbacks(0), "nothing in progress");
}
