//! Reciprocal history: the transformed form of this peer's changesets as one remote peer
//! will see them.
//!
//! When a changeset arrives from the remote peer, it is concurrent with the local changesets
//! the remote had not integrated when it was made. It is transformed against them, and they
//! are transformed against it; the transformed local changesets are what the *next* incoming
//! changeset from that peer must be merged with. This type stores those transformed forms,
//! keyed by local version, and forgets them once the remote peer has integrated them.
//!
//! A server also sends a flexible sync client changesets that are not in its history: the
//! whole copy of an object entering the client's view. The client merges its unuploaded
//! changesets against such a copy as against any download, so the server must merge them
//! against it too: the history keeps these *extra* changesets, placed after the history
//! version whose download carried them, and transforms them like the others.

use std::collections::BTreeMap;

use super::{merge, MergeReach, TransformError};
use crate::changeset::Changeset;

/// Transformed forms of local changesets, for one remote peer.
#[derive(Clone, Debug, Default)]
pub struct ReciprocalHistory {
    transformed: Forms,
    /// Changesets sent outside the history, keyed by ([`FormKey::Extra`]) the version after
    /// which the peer integrated them and their order there; each in its current form.
    extras: BTreeMap<(u64, u32), Changeset>,
}

/// Which changeset a concurrent form stands for: a local changeset of the history (its
/// version), or an extra changeset sent to the peer after history version `at`, `seq`-th of
/// those (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FormKey {
    /// The local changeset of this version.
    History(u64),
    /// An extra changeset sent after version `at`.
    Extra {
        /// The history version the message carrying it brought the peer to.
        at: u64,
        /// Its position among the extras at `at`, from 0.
        seq: u32,
    },
}

impl ReciprocalHistory {
    /// An empty reciprocal history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Transforms `incoming` (changesets from the remote peer, in order, all concurrent with
    /// every changeset of `concurrent`) so that it applies after `concurrent`, and records the
    /// transformed form of each concurrent local changeset the merge changed (one it left as
    /// it was keeps the form it had: the recorded one, or, with none recorded, itself).
    ///
    /// `concurrent` holds the original local changesets in version order (each with
    /// `meta.version` set); where this history holds a transformed form for a version, that
    /// form is used instead. On error nothing is changed.
    pub fn integrate(
        &mut self,
        incoming: &mut [Changeset],
        concurrent: &[&Changeset],
    ) -> Result<(), TransformError> {
        let keyed: Vec<(FormKey, &Changeset)> = concurrent
            .iter()
            .map(|c| (FormKey::History(c.meta.version), *c))
            .collect();
        self.integrate_keyed(incoming, &keyed)
    }

    /// [`integrate`](Self::integrate) with extra changesets among the concurrent ones: each
    /// concurrent changeset comes with its key, in the order the peer integrated them. For a
    /// [`FormKey::Extra`] the recorded form is used (the changeset given stands in when none
    /// is recorded). On error nothing is changed.
    pub fn integrate_keyed(
        &mut self,
        incoming: &mut [Changeset],
        concurrent: &[(FormKey, &Changeset)],
    ) -> Result<(), TransformError> {
        if concurrent.is_empty() {
            // Nothing the peer did not know of: the incoming changesets apply as they are.
            return Ok(());
        }
        let local: Vec<&Changeset> = concurrent
            .iter()
            .map(|(key, c)| self.form(*key).unwrap_or(c))
            .collect();
        // `merge_refs` changes nothing on error, so `incoming` is merged in place. A local
        // changeset the merge left as it was keeps the form it had (recorded, or the
        // changeset itself): only changed ones are recorded.
        let mut merged = merge::merge_refs(&local, incoming)?;
        for ((key, _), cs) in concurrent.iter().zip(&mut merged) {
            if let (FormKey::Extra { at, seq }, Some(_)) = (*key, &cs) {
                self.extras.insert((at, seq), cs.take().expect("matched"));
            }
        }
        // The forms of history versions, collected into `merged`'s own allocation (the
        // standard library collects a `filter_map` of a vector's `into_iter` in place when
        // the sizes match, as `Option<Changeset>`'s and `Changeset`'s do): a merge of a
        // long branch records a form for each of its 500,000 changesets, and moving them
        // into a fresh vector was a sixth of the merge of a million events, most of it the
        // kernel's first touch of the new pages (`perf`, `benches/branches.rs`).
        let forms: Vec<Changeset> = merged
            .into_iter()
            .zip(concurrent)
            .filter_map(|(cs, (key, _))| {
                let mut cs = cs?;
                // A form is found by its version; a history changeset's is its key's.
                if let FormKey::History(version) = *key {
                    cs.meta.version = version;
                }
                Some(cs)
            })
            .collect();
        self.transformed.record(forms);
        Ok(())
    }

    /// The recorded form of `key`, if there is one.
    pub fn form(&self, key: FormKey) -> Option<&Changeset> {
        match key {
            FormKey::History(version) => self.transformed.get(version),
            FormKey::Extra { at, seq } => self.extras.get(&(at, seq)),
        }
    }

    /// Records an extra changeset sent to the peer after history version `at`, `seq`-th
    /// there (or its transformed form, when loading a persisted history).
    pub fn set_extra(&mut self, at: u64, seq: u32, changeset: Changeset) {
        self.extras.insert((at, seq), changeset);
    }

    /// The extra changesets after version `base` (the peer had not integrated them when it
    /// made a changeset based on `base`), in the order it integrated them.
    pub fn extras_after(&self, base: u64) -> impl Iterator<Item = (FormKey, &Changeset)> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.extras
            .range((Excluded((base, u32::MAX)), Unbounded))
            .map(|(&(at, seq), cs)| (FormKey::Extra { at, seq }, cs))
    }

    /// Drops one extra changeset (see [`set_extra`](Self::set_extra)).
    pub fn forget_extra(&mut self, at: u64, seq: u32) {
        self.extras.remove(&(at, seq));
    }

    /// Drops the extras sent after version `at`: the peer never integrated them (it came
    /// back with an older download cursor).
    pub fn forget_extras_after(&mut self, at: u64) {
        if let Some(next) = at.checked_add(1) {
            self.extras.split_off(&(next, 0));
        }
    }

    /// Whether `local` (an original local changeset concurrent with the incoming changesets
    /// whose reach is `incoming`, [`MergeReach::of`]) must be passed to
    /// [`integrate`](Self::integrate) with them: false when the merge would change neither,
    /// because no instruction of the two sides can meet in a conflict group
    /// ([`MergeReach::meets`], against the recorded transformed form of `local`'s version
    /// where there is one). Leaving such a changeset out is exact and records nothing for it.
    /// Build the reach once per batch of incoming changesets: each call is then linear in the
    /// size of `local` alone.
    ///
    /// It stays exact when the reach was built before the incoming changesets were merged with
    /// earlier concurrent changesets (so that a caller can merge them in batches): merging only
    /// discards and rewrites instructions on the objects they address, except that erasing a
    /// table adds erasures of the columns linking to it. So while any incoming changeset
    /// erases a table, everything is merged.
    pub fn needs_merge(&self, incoming: &MergeReach, local: &Changeset) -> bool {
        self.needs_merge_keyed(incoming, FormKey::History(local.meta.version), local)
    }

    /// [`needs_merge`](Self::needs_merge) for the changeset of `key`: its recorded form, or
    /// `local` where none is recorded.
    pub fn needs_merge_keyed(
        &self,
        incoming: &MergeReach,
        key: FormKey,
        local: &Changeset,
    ) -> bool {
        let form = self.form(key).unwrap_or(local);
        incoming.erases_table() || incoming.meets(form)
    }

    /// [`needs_merge_keyed`](Self::needs_merge_keyed) for a changeset still encoded: its
    /// recorded form where there is one, else `local_bytes` read one instruction at a time
    /// ([`MergeReach::meets_encoded`]), so that a changeset the merge leaves out is never
    /// decoded.
    pub fn needs_merge_encoded(
        &self,
        incoming: &MergeReach,
        key: FormKey,
        local_bytes: &[u8],
    ) -> bool {
        incoming.erases_table()
            || match self.form(key) {
                Some(form) => incoming.meets(form),
                None => incoming.meets_encoded(local_bytes, super::ErasedTables::ByReach),
            }
    }

    /// Records a transformed form (when loading a persisted reciprocal history).
    pub fn set(&mut self, changeset: Changeset) {
        self.transformed.insert(changeset);
    }

    /// Every recorded form, by version.
    pub fn iter(&self) -> impl Iterator<Item = &Changeset> {
        self.transformed.0.iter()
    }

    /// The transformed form of local `version`, if one is recorded.
    pub fn get(&self, version: u64) -> Option<&Changeset> {
        self.transformed.get(version)
    }

    /// Drops the forms of versions up to and including `version`: the remote peer has
    /// integrated them and no later incoming changeset can be concurrent with them.
    pub fn forget_through(&mut self, version: u64) {
        match version.checked_add(1) {
            Some(next) => {
                self.transformed.forget_before(next);
                self.extras = self.extras.split_off(&(next, 0));
            }
            None => {
                self.transformed.0.clear();
                self.extras.clear();
            }
        }
    }

    /// Number of recorded forms (extras included).
    pub fn len(&self) -> usize {
        self.transformed.0.len() + self.extras.len()
    }

    /// Whether no form is recorded.
    pub fn is_empty(&self) -> bool {
        self.transformed.0.is_empty() && self.extras.is_empty()
    }
}

/// The recorded forms of local changesets, sorted by version, at most one a version.
///
/// A sorted vector rather than a map: a merge of a long branch records a form for each of its
/// changesets, already in version order, and moving that list in whole is what the history
/// costs then. A `BTreeMap` built from 500,000 forms was 10% of the merge of a million events
/// (`benches/branches.rs`, `halves`). Look-ups are binary searches. Forms after every recorded
/// version (a merge's usual result, and loading in version order) are appended; a form for a
/// version not recorded that falls among recorded ones costs one pass over the history, once
/// per call (the new forms of a call are merged in together). That happens when a merge first
/// changes a local changeset that earlier merges left as it was.
#[derive(Clone, Debug, Default)]
struct Forms(Vec<Changeset>);

impl Forms {
    /// Where `version`'s form is (`Ok`), or would go (`Err`).
    fn find(&self, version: u64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&version, |cs| cs.meta.version)
    }

    fn get(&self, version: u64) -> Option<&Changeset> {
        Some(&self.0[self.find(version).ok()?])
    }

    /// Records one form (its `meta.version` the local version it is the form of), replacing
    /// the one recorded for its version.
    fn insert(&mut self, form: Changeset) {
        match self.find(form.meta.version) {
            Ok(i) => self.0[i] = form,
            Err(i) => self.0.insert(i, form),
        }
    }

    /// Records `forms` (by `meta.version`, in any order): a later form of a version replaces
    /// an earlier one, in `forms` or recorded.
    fn record(&mut self, mut forms: Vec<Changeset>) {
        // A stable sort keeps equal versions in the order given; `dedup_by` then keeps the
        // first of a run and drops `later`, so the later form moves into its place first.
        forms.sort_by_key(|cs| cs.meta.version);
        forms.dedup_by(|later, earlier| {
            let same = later.meta.version == earlier.meta.version;
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
        let Some(first) = forms.first().map(|cs| cs.meta.version) else {
            return;
        };
        if !matches!(self.0.last(), Some(last) if last.meta.version >= first) {
            // All after what is recorded (or nothing is): appended, or moved in whole.
            if self.0.is_empty() {
                self.0 = forms;
            } else {
                self.0.append(&mut forms);
            }
            return;
        }
        // Versions already recorded are replaced where they are; the rest are merged in: two
        // sorted runs, which the standard library's stable sort merges in one linear pass.
        let mut new = Vec::new();
        for form in forms {
            match self.find(form.meta.version) {
                Ok(i) => self.0[i] = form,
                Err(_) => new.push(form),
            }
        }
        if !new.is_empty() {
            self.0.append(&mut new);
            self.0.sort_by_key(|cs| cs.meta.version);
        }
    }

    /// Drops the forms of versions before `version`.
    fn forget_before(&mut self, version: u64) {
        let kept = self.0.partition_point(|cs| cs.meta.version < version);
        self.0.drain(..kept);
        // A history that once held a long branch's forms gives the room back once the peer
        // has integrated most of them (as the map freed its nodes).
        if self.0.capacity() > 2 * self.0.len() + 64 {
            self.0.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{FormKey, ReciprocalHistory};
    use crate::changeset::{
        ArrayInsert, Changeset, FieldPath, Instruction, PathElement, Payload, PrimaryKey, Update,
    };

    /// A changeset setting `Task[1].n` to `value` at `timestamp`, from `origin`, at `version`.
    fn set(value: i64, timestamp: u64, origin: u64, version: u64) -> Changeset {
        let mut c = Changeset::new();
        let table = c.intern("Task");
        let field = c.intern("n");
        c.push(Instruction::Update(Update {
            path: FieldPath {
                table,
                object: PrimaryKey::Int(1),
                field,
                path: Default::default(),
            },
            value: Payload::Int(value),
            is_default: false,
            prior_size: 0,
        }));
        c.meta.origin_timestamp = timestamp;
        c.meta.origin_file_ident = origin;
        c.meta.version = version;
        c
    }

    #[test]
    fn an_extra_changeset_is_merged_and_recorded_under_its_own_key() {
        let mut history = ReciprocalHistory::new();
        // A copy sent after version 5, newer than the upload: it wins, and the upload's set
        // is discarded, as the peer's merge of the copy did.
        history.set_extra(5, 0, set(7, 300, 1, 5));
        let local = set(3, 100, 9, 4);
        let copy = history
            .form(FormKey::Extra { at: 5, seq: 0 })
            .unwrap()
            .clone();
        let mut incoming = [set(4, 200, 2, 0)];
        history
            .integrate_keyed(
                &mut incoming,
                &[
                    (FormKey::History(4), &local),
                    (FormKey::Extra { at: 5, seq: 0 }, &copy),
                ],
            )
            .unwrap();
        assert!(incoming[0].instructions.is_empty(), "{:?}", incoming[0]);
        // The history's form and the extra's are kept apart, although both carry version 4
        // and 5 in their metadata.
        assert!(history.form(FormKey::History(4)).is_some());
        assert_eq!(history.form(FormKey::History(5)), None);
        assert_eq!(
            history
                .form(FormKey::Extra { at: 5, seq: 0 })
                .unwrap()
                .instructions
                .len(),
            1
        );
    }

    #[test]
    fn extras_are_found_after_a_base_and_forgotten_with_their_version() {
        let mut history = ReciprocalHistory::new();
        history.set_extra(5, 0, set(1, 1, 1, 5));
        history.set_extra(5, 1, set(2, 1, 1, 5));
        history.set_extra(8, 0, set(3, 1, 1, 8));
        let after = |h: &ReciprocalHistory, base| -> Vec<FormKey> {
            h.extras_after(base).map(|(k, _)| k).collect()
        };
        assert_eq!(after(&history, 4).len(), 3);
        // A changeset based on version 5 was made after the extras at 5 were integrated.
        assert_eq!(after(&history, 5), [FormKey::Extra { at: 8, seq: 0 }]);
        assert!(after(&history, u64::MAX).is_empty());
        // A peer back with cursor 6 never integrated the extra at 8.
        history.forget_extras_after(6);
        assert_eq!(after(&history, 0).len(), 2);
        history.forget_through(5);
        assert!(history.is_empty());
    }

    /// A changeset inserting `Task[1].list[at]` (of `prior` elements) at `timestamp`, from
    /// `origin`, at `version`.
    fn insert(at: u32, prior: u32, timestamp: u64, origin: u64, version: u64) -> Changeset {
        let mut c = Changeset::new();
        let table = c.intern("Task");
        let field = c.intern("list");
        c.push(Instruction::ArrayInsert(ArrayInsert {
            path: FieldPath {
                table,
                object: PrimaryKey::Int(1),
                field,
                path: smallvec::smallvec![PathElement::Index(at)],
            },
            value: Payload::Int(i64::from(at)),
            prior_size: prior,
        }));
        c.meta.origin_timestamp = timestamp;
        c.meta.origin_file_ident = origin;
        c.meta.version = version;
        c
    }

    /// The index and prior size of a one-insert changeset.
    fn place(c: &Changeset) -> (u32, u32) {
        match &c.instructions[..] {
            [Instruction::ArrayInsert(i)] => (i.path.last_index().unwrap(), i.prior_size),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_later_merge_replaces_the_forms_it_changes() {
        // Locally v1 and v2, then the peer's a arrives (concurrent with both), then local v3
        // (after a) and the peer's b (after a, concurrent with v1 to v3). The second merge
        // records more forms than the history holds (the bulk path), two of them replacing
        // forms the first merge recorded.
        let mut history = ReciprocalHistory::new();
        let (v1, v2) = (insert(0, 0, 100, 1, 1), insert(1, 1, 101, 1, 2));
        let mut a = [insert(0, 0, 200, 2, 0)];
        history.integrate(&mut a, &[&v1, &v2]).unwrap();
        // v1 and v2 are older: a goes after both.
        assert_eq!(place(&a[0]), (2, 2));
        assert_eq!(place(history.get(1).unwrap()), (0, 1));
        assert_eq!(place(history.get(2).unwrap()), (1, 2));
        let v3 = insert(3, 3, 102, 1, 3);
        let mut b = [insert(1, 1, 300, 2, 0)];
        history.integrate(&mut b, &[&v1, &v2, &v3]).unwrap();
        assert_eq!(place(&b[0]), (4, 4));
        assert_eq!(history.len(), 3);
        assert_eq!(place(history.get(1).unwrap()), (0, 2));
        assert_eq!(place(history.get(2).unwrap()), (1, 3));
        assert_eq!(place(history.get(3).unwrap()), (3, 4));
        // A merge recording fewer forms than the history holds takes the other path.
        let mut c = [insert(4, 4, 400, 2, 0)];
        history.integrate(&mut c, &[&v3]).unwrap();
        assert_eq!(place(&c[0]), (5, 5));
        assert_eq!(place(history.get(3).unwrap()), (3, 5));
        assert_eq!(place(history.get(1).unwrap()), (0, 2));
    }

    #[test]
    fn of_two_forms_recorded_for_one_version_the_later_is_kept() {
        // Only a caller passing one version twice does this; the bulk path keeps what
        // one-by-one inserts kept.
        let mut history = ReciprocalHistory::new();
        let (first, second) = (insert(0, 0, 100, 1, 7), insert(1, 1, 101, 1, 7));
        let mut a = [insert(0, 0, 200, 2, 0)];
        history.integrate(&mut a, &[&first, &second]).unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(place(history.get(7).unwrap()), (1, 2));
    }

    /// `Forms` against a `BTreeMap` doing the same, one insert at a time: recording into an
    /// empty list, after it, over it, into gaps of it, with repeated versions, and forgetting.
    #[test]
    fn recorded_forms_are_those_a_map_would_hold() {
        use super::Forms;
        use std::collections::BTreeMap;
        // A deterministic mix of versions (a linear congruential sequence), forms told apart
        // by their origin timestamp.
        let mut seed = 7u64;
        let mut next = |bound: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % bound
        };
        let mut forms = Forms::default();
        let mut model: BTreeMap<u64, u64> = BTreeMap::new();
        let mut stamp = 0;
        for round in 0..300 {
            let batch: Vec<Changeset> = (0..next(12))
                .map(|_| {
                    stamp += 1;
                    // Early rounds append after what is recorded; later ones land anywhere.
                    let version = if round < 20 {
                        10 * round + next(10)
                    } else {
                        next(400)
                    };
                    set(0, stamp, 1, version)
                })
                .collect();
            for cs in &batch {
                model.insert(cs.meta.version, cs.meta.origin_timestamp);
            }
            if round % 50 == 49 {
                forms.record(batch);
                let version = next(400);
                forms.forget_before(version);
                model = model.split_off(&version);
            } else if round % 7 == 3 {
                for cs in batch {
                    forms.insert(cs);
                }
            } else {
                forms.record(batch);
            }
            let held: Vec<(u64, u64)> = forms
                .0
                .iter()
                .map(|cs| (cs.meta.version, cs.meta.origin_timestamp))
                .collect();
            let expected: Vec<(u64, u64)> = model.iter().map(|(v, t)| (*v, *t)).collect();
            assert_eq!(held, expected, "round {round}");
            for version in 0..400 {
                assert_eq!(
                    forms.get(version).map(|cs| cs.meta.origin_timestamp),
                    model.get(&version).copied()
                );
            }
        }
        assert!(!model.is_empty());
    }
}
