//! Reading a spawned `tandem-server`'s log: the address it listens on, then draining the rest.
//!
//! The server logs through `tracing` on stderr (text by default); the start-up event's message
//! is `tandem-server listening on <ADDR>` and other events (the descriptor limit, ...) may come
//! before it, so the reader scans for it rather than assuming the first line.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::ChildStderr;

/// Reads `stderr` until the start-up event and returns the address it names; a thread then
/// keeps reading (and discarding) the log so the server never blocks on a full pipe.
///
/// Panics with every line read if the log ends (the server exited) before the event.
pub fn listening_addr(stderr: ChildStderr) -> SocketAddr {
    const MARK: &str = "tandem-server listening on ";
    let mut reader = BufReader::new(stderr);
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("tandem-server ended its log before listening:\n{seen}");
        }
        if let Some(at) = line.find(MARK) {
            let addr = line[at + MARK.len()..]
                .split_whitespace()
                .next()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("unexpected start-up line: {line:?}"));
            std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
            return addr;
        }
        seen.push_str(&line);
    }
}
