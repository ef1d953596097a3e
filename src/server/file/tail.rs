//! The newest history rows of a server file, kept in memory as stored (encoded changesets), so
//! that the DOWNLOAD every bound session sends after a change is assembled without reading
//! SQLite, on the connection's own task (issue 18, goal 5: one change fanned out to 1,000
//! sessions read the same rows 1,000 times, each read on a blocking thread in the path's FIFO).
//!
//! Bounded by [`TAIL_MAX_BYTES`] of changesets and [`TAIL_MAX_ROWS`] rows per open server
//! file, and by [`TAILS_MAX_BYTES`] for every file of the process together: older rows are
//! dropped first, and a session further behind reads SQLite as before.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::HistoryRow;

/// Most changeset bytes the tail of one server file holds (1 MiB).
pub const TAIL_MAX_BYTES: usize = 1 << 20;
/// Most rows the tail of one server file holds.
pub const TAIL_MAX_ROWS: usize = 4096;
/// Most changeset bytes the tails of every server file of the process hold together (64 MiB):
/// a file whose row would pass it drops its own oldest rows until it does not.
pub const TAILS_MAX_BYTES: usize = 64 << 20;

/// Changeset bytes held by every tail of the process.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Consecutive history rows: versions `start + 1 ..= end()`.
#[derive(Debug, Default)]
pub(super) struct Tail {
    rows: VecDeque<HistoryRow>,
    /// The version just before the first row held.
    start: u64,
    /// Changeset bytes held.
    bytes: usize,
}

impl Tail {
    /// The newest version held (`start` when nothing is).
    pub(super) fn end(&self) -> u64 {
        self.start + self.rows.len() as u64
    }

    /// Appends `row`, a row just committed to the history. A row that does not follow the
    /// newest one held (rows were written that never passed here) starts the tail again at it.
    /// Then the oldest rows go until both bounds hold.
    pub(super) fn push(&mut self, row: HistoryRow) {
        let version = row.0 as u64;
        if version != self.end() + 1 {
            self.clear(version.saturating_sub(1));
        }
        self.bytes += row.1.len();
        let held = HELD.fetch_add(row.1.len(), Ordering::Relaxed) + row.1.len();
        self.rows.push_back(row);
        let mut over = held.saturating_sub(TAILS_MAX_BYTES);
        while self.bytes > TAIL_MAX_BYTES || self.rows.len() > TAIL_MAX_ROWS || over > 0 {
            let Some(oldest) = self.rows.pop_front() else {
                break;
            };
            over = over.saturating_sub(oldest.1.len());
            self.forget(oldest.1.len());
            self.start += 1;
        }
    }

    /// Holds nothing, as of version `latest`.
    pub(super) fn clear(&mut self, latest: u64) {
        self.rows.clear();
        self.forget(self.bytes);
        self.start = latest;
    }

    /// `bytes` of changesets are no longer held.
    fn forget(&mut self, bytes: usize) {
        self.bytes -= bytes;
        HELD.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// The rows after `after`, oldest first, when the tail holds every one of them through
    /// `latest` (the file's newest version); `None` otherwise.
    pub(super) fn after(
        &self,
        after: u64,
        latest: u64,
    ) -> Option<std::collections::vec_deque::Iter<'_, HistoryRow>> {
        if after < self.start || self.end() != latest || after > latest {
            return None;
        }
        Some(self.rows.range((after - self.start) as usize..))
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        HELD.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests take turns: one of them fills the process's bound, which every tail shares.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn row(version: u64, len: usize) -> HistoryRow {
        (version as i64, vec![7; len], 1, 0, 0)
    }

    fn versions(tail: &Tail, after: u64, latest: u64) -> Option<Vec<i64>> {
        tail.after(after, latest)
            .map(|rows| rows.map(|r| r.0).collect())
    }

    #[test]
    fn the_tail_answers_only_for_what_it_holds_through_the_latest_version() {
        let _turn = serial();
        let mut tail = Tail::default();
        // A fresh tail holds nothing after version 0, through version 0.
        assert_eq!(versions(&tail, 0, 0), Some(vec![]));
        // Rows it never saw (the file opened at version 10): nothing until a row arrives.
        assert_eq!(versions(&tail, 10, 10), None);
        tail.push(row(11, 5));
        tail.push(row(12, 5));
        assert_eq!(versions(&tail, 10, 12), Some(vec![11, 12]));
        assert_eq!(versions(&tail, 11, 12), Some(vec![12]));
        assert_eq!(versions(&tail, 12, 12), Some(vec![]));
        // Before what it holds, past the latest, or behind the file's latest: no answer.
        assert_eq!(versions(&tail, 9, 12), None);
        assert_eq!(versions(&tail, 13, 12), None);
        assert_eq!(versions(&tail, 11, 13), None);
        // A row after a gap starts again.
        tail.push(row(20, 5));
        assert_eq!(versions(&tail, 19, 20), Some(vec![20]));
        assert_eq!(versions(&tail, 12, 20), None);
        tail.clear(20);
        assert_eq!(versions(&tail, 20, 20), Some(vec![]));
        assert_eq!(versions(&tail, 19, 20), None);
    }

    #[test]
    fn the_tails_of_a_process_stay_within_their_bound_together() {
        let _turn = serial();
        // Other tests' tails hold a few small rows at most; these fill the bound.
        let mut tails: Vec<Tail> = (0..TAILS_MAX_BYTES / TAIL_MAX_BYTES + 6)
            .map(|_| Tail::default())
            .collect();
        for tail in &mut tails {
            tail.push(row(1, TAIL_MAX_BYTES));
        }
        let held: usize = tails.iter().map(|t| t.bytes).sum();
        assert!(held <= TAILS_MAX_BYTES, "{held}");
        assert!(held >= TAILS_MAX_BYTES - 4 * TAIL_MAX_BYTES, "{held}");
        // A tail that could not keep its row answers only for what it holds: nothing after 0.
        let empty = tails
            .iter()
            .find(|t| t.bytes == 0)
            .expect("a tail over the bound");
        assert_eq!(versions(empty, 0, 1), None);
        assert_eq!(versions(empty, 1, 1), Some(vec![]));
        // Dropping them gives their bytes back.
        drop(tails);
        let mut tail = Tail::default();
        tail.push(row(1, TAIL_MAX_BYTES));
        assert_eq!(versions(&tail, 0, 1), Some(vec![1]));
    }

    #[test]
    fn the_tail_drops_its_oldest_rows_to_stay_within_its_bounds() {
        let _turn = serial();
        let mut tail = Tail::default();
        for v in 1..=(TAIL_MAX_ROWS as u64 + 3) {
            tail.push(row(v, 1));
        }
        assert_eq!(tail.rows.len(), TAIL_MAX_ROWS);
        assert_eq!(tail.start, 3);
        assert_eq!(tail.bytes, TAIL_MAX_ROWS);
        // Bytes: two rows of half the bound each, then one more byte drops the first.
        let mut tail = Tail::default();
        tail.push(row(1, TAIL_MAX_BYTES / 2));
        tail.push(row(2, TAIL_MAX_BYTES / 2));
        assert_eq!(versions(&tail, 0, 2), Some(vec![1, 2]));
        tail.push(row(3, 1));
        assert_eq!(versions(&tail, 0, 3), None);
        assert_eq!(versions(&tail, 1, 3), Some(vec![2, 3]));
        // A row over the bound alone leaves nothing held, still as of its version.
        tail.push(row(4, TAIL_MAX_BYTES + 1));
        assert_eq!(tail.bytes, 0);
        assert_eq!(versions(&tail, 4, 4), Some(vec![]));
        assert_eq!(versions(&tail, 3, 4), None);
    }
}
