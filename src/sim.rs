//! Where the library meets the world outside it: the wall clock, tasks, blocking store work,
//! TCP and random numbers.
//!
//! In every build an app uses, each seam is the operating system's (and tokio's). With the
//! cargo feature `sim` (for tests only; an app never enables it), code that runs inside a
//! [turmoil](https://docs.rs/turmoil) simulation gets the simulation's instead, so that one
//! seed decides everything and a failing seed replays exactly (`tests/sim/`,
//! `docs/testing.md`):
//!
//! - the clock is the simulated host's (turmoil's `since_epoch`), plus the skew the test gave
//!   the running task (`with_clock_skew`, feature `sim`);
//! - store work that normally goes to tokio's blocking pool runs inline on the simulation's
//!   thread (SQLite calls are synchronous: a simulated host is busy while it runs them, as a
//!   real one is);
//! - TCP is turmoil's simulated network (its latency, partitions and crashes);
//! - random numbers (server idents and salts, reconnect jitter) come from a generator seeded
//!   by the test (`seed_random`, feature `sim`).
//!
//! Outside a simulation (and in builds without the feature) nothing here changes behaviour.

use std::time::SystemTime;

#[cfg(feature = "sim")]
tokio::task_local! {
    /// Milliseconds added to the simulated clock for the task that runs in this scope.
    static CLOCK_SKEW_MS: i64;
}

#[cfg(feature = "sim")]
thread_local! {
    /// The simulation's random numbers (the simulation runs on one thread).
    static RANDOM: std::cell::RefCell<Option<rand::rngs::SmallRng>> =
        const { std::cell::RefCell::new(None) };
}

/// Whether the caller runs inside a turmoil simulation (always `false` without the `sim`
/// feature).
#[cfg_attr(not(feature = "client"), allow(dead_code))]
pub(crate) fn in_simulation() -> bool {
    #[cfg(feature = "sim")]
    {
        turmoil::in_simulation()
    }
    #[cfg(not(feature = "sim"))]
    {
        false
    }
}

/// The wall clock: the system's, or inside a simulation the simulated host's plus the running
/// task's skew (`with_clock_skew`, with the `sim` feature).
pub(crate) fn now() -> SystemTime {
    #[cfg(feature = "sim")]
    if let Some(since) = turmoil::since_epoch() {
        let at = std::time::UNIX_EPOCH + since;
        let skew = CLOCK_SKEW_MS.try_with(|s| *s).unwrap_or(0);
        let by = std::time::Duration::from_millis(skew.unsigned_abs());
        return if skew >= 0 { at + by } else { at - by };
    }
    SystemTime::now()
}

/// Runs `task` with its wall clock (`now`: changeset timestamps, token expiry checks) moved
/// by `skew_ms` milliseconds (negative: behind). Only inside a simulation; tasks it spawns do
/// not inherit the skew.
#[cfg(feature = "sim")]
pub async fn with_clock_skew<F: std::future::Future>(skew_ms: i64, task: F) -> F::Output {
    CLOCK_SKEW_MS.scope(skew_ms, task).await
}

#[cfg(feature = "sim")]
thread_local! {
    /// The tag of the simulated host whose code this thread runs now (0: none).
    static HOST_TAG: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The tag of the simulated host whose code runs on this thread now: the one given to
/// [`with_host_tag`] around the host's future (tasks the library spawns inside a simulation
/// inherit it), 0 outside any. The simulation's allocator reads it to count each host's heap
/// bytes (`tests/sim/memory.rs`); it never allocates.
#[cfg(feature = "sim")]
pub fn host_tag() -> u32 {
    HOST_TAG.try_with(|t| t.get()).unwrap_or(0)
}

/// `task` with `tag` as the [`host_tag`] while it is polled, and every task the library spawns
/// from it (inside a simulation) too.
#[cfg(feature = "sim")]
pub fn with_host_tag<F: std::future::Future>(
    tag: u32,
    task: F,
) -> impl std::future::Future<Output = F::Output> {
    HostTagged {
        tag,
        task: Box::pin(task),
    }
}

/// Runs `f` with no host tag (0): what it allocates is charged to no simulated host. For the
/// test's own notes made inside a host's code (its trace, what its listeners were told), so
/// that a host's count holds only what the library keeps for it, and must fall back to zero
/// once the host is gone.
#[cfg(feature = "sim")]
pub fn untagged<R>(f: impl FnOnce() -> R) -> R {
    let previous = HOST_TAG.with(|t| t.replace(0));
    let out = f();
    HOST_TAG.with(|t| t.set(previous));
    out
}

#[cfg(feature = "sim")]
struct HostTagged<F> {
    tag: u32,
    task: std::pin::Pin<Box<F>>,
}

#[cfg(feature = "sim")]
impl<F: std::future::Future> std::future::Future for HostTagged<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let tag = self.tag;
        let previous = HOST_TAG.with(|t| t.replace(tag));
        let polled = self.task.as_mut().poll(cx);
        HOST_TAG.with(|t| t.set(previous));
        polled
    }
}

/// Seeds the random numbers the library draws inside a simulation on this thread (server
/// idents and salts, reconnect jitter). Unseeded, they come from the operating system.
#[cfg(feature = "sim")]
pub fn seed_random(seed: u64) {
    use rand::SeedableRng;
    RANDOM.with(|r| *r.borrow_mut() = Some(rand::rngs::SmallRng::seed_from_u64(seed)));
}

/// The simulation's next random number, if a simulation runs here with seeded numbers.
#[cfg(feature = "client")]
pub(crate) fn simulated_random() -> Option<u64> {
    #[cfg(feature = "sim")]
    if in_simulation() {
        use rand::RngCore;
        return RANDOM.with(|r| r.borrow_mut().as_mut().map(|rng| rng.next_u64()));
    }
    None
}

/// Runs `f` where store work runs: tokio's blocking pool, or inline inside a simulation.
/// Same result as `tokio::task::spawn_blocking(f).await`.
#[cfg(feature = "client")]
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if in_simulation() {
        return Ok(f());
    }
    tokio::task::spawn_blocking(f).await
}

/// Like [`blocking`], on the library's runtime's blocking pool, so callable where no tokio
/// runtime is current (futures the FFI polls from Kotlin, Swift or Python); inline inside a
/// simulation.
#[cfg(feature = "client")]
pub(crate) async fn library_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if in_simulation() {
        return Ok(f());
    }
    crate::client::runtime().spawn_blocking(f).await
}

/// Spawns a sync task: on the library's runtime, or inside a simulation on the simulated
/// host's.
#[cfg(feature = "client")]
pub(crate) fn spawn<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    if in_simulation() {
        return spawn_in_simulation(task);
    }
    crate::client::runtime().spawn(task)
}

/// Spawns a task of the server (or of a sync session) on the current runtime: tokio's
/// `spawn`, or inside a simulation the simulated host's local task set.
///
/// Why not `tokio::spawn` in a simulation: a crashed host's runtime drops its tasks shard by
/// shard, and tokio picks a task's shard from its id, a process-wide counter. Which of the
/// server's connections closed first (and so which client saw its connection reset first, and
/// drew its reconnect delay first) then depended on how many tasks earlier seeds of the same
/// process had spawned: a seed took another path when replayed alone. The local task set drops
/// its tasks in the order they were spawned.
#[cfg(feature = "server")]
pub(crate) fn spawn_task<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    if in_simulation() {
        return spawn_in_simulation(task);
    }
    tokio::spawn(task)
}

#[cfg(any(feature = "client", feature = "server"))]
fn spawn_in_simulation<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    #[cfg(feature = "sim")]
    return tokio::task::spawn_local(with_host_tag(host_tag(), task));
    #[cfg(not(feature = "sim"))]
    tokio::task::spawn_local(task)
}

/// A byte stream a connection runs over (TCP, simulated TCP, TLS over either).
#[cfg(feature = "client")]
pub(crate) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

#[cfg(feature = "client")]
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Opens a TCP connection to `host:port`: the operating system's (vectored writes as single
/// sends, [`crate::protocol::socket::NoSigpipe`]), or the simulated network's.
#[cfg(feature = "client")]
pub(crate) async fn connect(host: &str, port: u16) -> std::io::Result<Box<dyn Io>> {
    #[cfg(feature = "sim")]
    if in_simulation() {
        return Ok(Box::new(
            turmoil::net::TcpStream::connect((host, port)).await?,
        ));
    }
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    Ok(Box::new(crate::protocol::socket::NoSigpipe(tcp)))
}

/// A listening TCP socket: the operating system's, or the simulated network's.
#[cfg(feature = "server")]
pub(crate) enum Listener {
    /// A tokio listener.
    Os(tokio::net::TcpListener),
    /// A turmoil listener.
    #[cfg(feature = "sim")]
    Simulated(turmoil::net::TcpListener),
}

#[cfg(feature = "server")]
impl Listener {
    /// Binds `addr` (inside a simulation, on the simulated host).
    pub(crate) async fn bind(addr: std::net::SocketAddr) -> std::io::Result<Listener> {
        #[cfg(feature = "sim")]
        if in_simulation() {
            return Ok(Listener::Simulated(
                turmoil::net::TcpListener::bind(addr).await?,
            ));
        }
        Ok(Listener::Os(tokio::net::TcpListener::bind(addr).await?))
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match self {
            Listener::Os(l) => l.local_addr(),
            #[cfg(feature = "sim")]
            Listener::Simulated(l) => l.local_addr(),
        }
    }

    /// The next connection and its peer.
    pub(crate) async fn accept(&self) -> std::io::Result<(Box<dyn Io>, std::net::SocketAddr)> {
        match self {
            Listener::Os(l) => {
                let (tcp, peer) = l.accept().await?;
                Ok((Box::new(crate::protocol::socket::NoSigpipe(tcp)), peer))
            }
            #[cfg(feature = "sim")]
            Listener::Simulated(l) => {
                let (tcp, peer) = l.accept().await?;
                Ok((Box::new(tcp), peer))
            }
        }
    }
}
