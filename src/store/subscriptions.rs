//! Flexible sync subscription sets, kept in the local file (`_tandem_subscription_set`).
//!
//! The model is realm-core's (`sync::SubscriptionSet`): the app edits the latest set, which
//! commits as a new version; the sync session sends each version after the active one to the
//! server (QUERY), and a version becomes the active one, [`SubscriptionSetState::Complete`],
//! when its bootstrap has been integrated, in the same SQLite transaction. Older versions are
//! then [`SubscriptionSetState::Superseded`]. A version the server cannot evaluate is
//! [`SubscriptionSetState::Error`] (QUERY_ERROR) and the active set stays what it was.
//!
//! A subscription is a class and a query in the serialized query language (arguments inlined
//! as literals, see [`super::query`]), with an optional name; the server receives a set as
//! `{"<Class>":"(<q1>) OR (<q2>)", ...}` (`realm-wire-compat.md` section 4.2).

use rusqlite::{params, Connection, OptionalExtension};

#[cfg(feature = "client")]
use super::sync::DownloadCursors;
use super::{query, Database, StoreError};
use crate::model::Value;
use crate::state::Schemas;

/// One subscription: the objects of `class` that match `query`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// Its name, if it was given one (unique within a set).
    pub name: Option<String>,
    /// The class (a top-level class of the local schema).
    pub class: String,
    /// The query in the serialized query language, arguments inlined (what the server
    /// evaluates), e.g. `done == false AND owner == B64"YWxpY2U="`.
    pub query: String,
}

/// Where a subscription set stands (realm-core's `SubscriptionSet::State`, without its
/// transient `Bootstrapping` and `AwaitingMark`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionSetState {
    /// Committed locally; the server has not yet sent (all of) what it matches.
    Pending,
    /// The server's bootstrap of it is integrated: it is the active set.
    Complete,
    /// The server could not evaluate it (QUERY_ERROR); the message is the server's. The
    /// active set is unchanged.
    Error(String),
    /// A newer set completed first, or replaced it.
    Superseded,
}

impl SubscriptionSetState {
    fn from_code(code: &str, error: Option<String>) -> Result<Self, StoreError> {
        Ok(match code {
            "pending" => SubscriptionSetState::Pending,
            "complete" => SubscriptionSetState::Complete,
            "error" => SubscriptionSetState::Error(error.unwrap_or_default()),
            "superseded" => SubscriptionSetState::Superseded,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "subscription set state {other:?}"
                )))
            }
        })
    }
}

/// One version of the subscriptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionSet {
    /// Its version: 0 for the empty set a file starts with, then 1, 2, ... per update.
    pub version: u64,
    /// Where it stands.
    pub state: SubscriptionSetState,
    /// Its subscriptions, in the order they were added.
    pub subscriptions: Vec<Subscription>,
}

impl SubscriptionSet {
    /// The subscription called `name`.
    pub fn find(&self, name: &str) -> Option<&Subscription> {
        self.subscriptions
            .iter()
            .find(|s| s.name.as_deref() == Some(name))
    }

    /// The set as flexible sync sends it (IDENT and QUERY bodies): a JSON object from class
    /// name to its queries, each in parentheses, joined by ` OR `.
    pub fn wire_body(&self) -> String {
        let mut classes: Vec<(&str, Vec<&str>)> = Vec::new();
        for s in &self.subscriptions {
            match classes.iter_mut().find(|(c, _)| *c == s.class) {
                Some((_, queries)) => queries.push(&s.query),
                None => classes.push((&s.class, vec![&s.query])),
            }
        }
        let body: serde_json::Map<String, serde_json::Value> = classes
            .into_iter()
            .map(|(class, queries)| {
                let joined = queries
                    .iter()
                    .map(|q| format!("({q})"))
                    .collect::<Vec<_>>()
                    .join(" OR ");
                (class.to_owned(), joined.into())
            })
            .collect();
        serde_json::Value::Object(body).to_string()
    }
}

/// The next version of the subscriptions being edited in [`Database::update_subscriptions`].
pub struct MutableSubscriptionSet<'a> {
    schemas: &'a Schemas,
    subscriptions: Vec<Subscription>,
}

impl MutableSubscriptionSet<'_> {
    /// Subscribes to the objects of `class` matching `query` (the store's query language,
    /// `$0`, `$1`, ... taken from `args` and inlined as literals). A named subscription
    /// replaces the one of the same name (an update); an unnamed one is added unless the same
    /// class and query are already subscribed. Returns whether the set changed.
    ///
    /// Errors ([`StoreError::InvalidArgument`]): no top-level class `class`, a query that does
    /// not compile against it, a link argument, SORT/DISTINCT/LIMIT (the server evaluates
    /// membership only), more values than a subscription may bind (the server's rule,
    /// `query::Unsubscribable`). A link path is accepted here and refused by a Tandem server
    /// (the set ends in state `Error`).
    pub fn add(
        &mut self,
        name: Option<&str>,
        class: &str,
        query: &str,
        args: &[Value],
    ) -> Result<bool, StoreError> {
        let text = query::inline_arguments(query, args)
            .map_err(|e| StoreError::InvalidArgument(format!("subscription on {class}: {e}")))?;
        let compiled = query::compile(self.schemas, class, &text, &[])
            .map_err(|e| StoreError::InvalidArgument(format!("subscription on {class}: {e}")))?;
        match query::Unsubscribable::of(&compiled) {
            // Sent: the server decides whether it serves a link path (a Tandem server refuses
            // the set with QUERY_ERROR 226, as BaaS did; realm-core's client sends it too).
            None | Some(query::Unsubscribable::LinkPath) => {}
            Some(why) => {
                return Err(StoreError::InvalidArgument(format!(
                    "subscription on {class}: {why}"
                )))
            }
        }
        let subscription = Subscription {
            name: name.map(str::to_owned),
            class: class.to_owned(),
            query: text,
        };
        let existing = match name {
            Some(n) => self
                .subscriptions
                .iter()
                .position(|s| s.name.as_deref() == Some(n)),
            None => self.subscriptions.iter().position(|s| {
                s.name.is_none() && s.class == class && s.query == subscription.query
            }),
        };
        Ok(match existing {
            Some(i) if self.subscriptions[i] == subscription => false,
            Some(i) => {
                self.subscriptions[i] = subscription;
                true
            }
            None => {
                self.subscriptions.push(subscription);
                true
            }
        })
    }

    /// Removes the subscription called `name`; whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.subscriptions.len();
        self.subscriptions
            .retain(|s| s.name.as_deref() != Some(name));
        self.subscriptions.len() != before
    }

    /// Removes every subscription on `class`; how many there were.
    pub fn remove_class(&mut self, class: &str) -> usize {
        let before = self.subscriptions.len();
        self.subscriptions.retain(|s| s.class != class);
        before - self.subscriptions.len()
    }

    /// Removes every subscription.
    pub fn clear(&mut self) {
        self.subscriptions.clear();
    }

    /// The subscriptions as edited so far.
    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subscriptions
    }
}

fn encode_subscriptions(subscriptions: &[Subscription]) -> String {
    serde_json::Value::Array(
        subscriptions
            .iter()
            .map(|s| serde_json::json!({"name": s.name, "class": s.class, "query": s.query}))
            .collect(),
    )
    .to_string()
}

fn decode_subscriptions(version: u64, json: &str) -> Result<Vec<Subscription>, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("subscription set {version}"));
    let items: Vec<serde_json::Value> = serde_json::from_str(json).map_err(|_| corrupt())?;
    items
        .into_iter()
        .map(|item| {
            let text = |k: &str| item.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            Ok(Subscription {
                name: text("name"),
                class: text("class").ok_or_else(corrupt)?,
                query: text("query").ok_or_else(corrupt)?,
            })
        })
        .collect()
}

const COLUMNS: &str = "version, state, error, subscriptions";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, Option<String>, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_set(
    (version, state, error, json): (i64, String, Option<String>, String),
) -> Result<SubscriptionSet, StoreError> {
    let version = version as u64;
    Ok(SubscriptionSet {
        version,
        state: SubscriptionSetState::from_code(&state, error)?,
        subscriptions: decode_subscriptions(version, &json)?,
    })
}

/// The version 0 a file starts with: empty and complete (nothing to download yet).
fn initial() -> SubscriptionSet {
    SubscriptionSet {
        version: 0,
        state: SubscriptionSetState::Complete,
        subscriptions: Vec::new(),
    }
}

fn latest(conn: &Connection) -> Result<SubscriptionSet, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM _tandem_subscription_set ORDER BY version DESC LIMIT 1"
    ))?
    .query_row([], row)
    .optional()?
    .map_or(Ok(initial()), to_set)
}

fn active(conn: &Connection) -> Result<SubscriptionSet, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM _tandem_subscription_set WHERE state = 'complete'
         ORDER BY version DESC LIMIT 1"
    ))?
    .query_row([], row)
    .optional()?
    .map_or(Ok(initial()), to_set)
}

/// Marks `version` complete (its bootstrap is integrated) and every older set superseded.
/// The server may bootstrap the active set again (a server that lost the client's view);
/// errors ([`StoreError::InvalidArgument`], rolling the bootstrap back) when set `version` is
/// neither pending nor complete here: the server bootstrapped a set this file did not send.
#[cfg(feature = "client")]
fn complete(conn: &Connection, version: u64) -> Result<(), StoreError> {
    let completed = match version {
        // The empty set a file starts with has no row; it is complete already.
        0 => 1,
        v => conn.execute(
            "UPDATE _tandem_subscription_set SET state = 'complete'
             WHERE version = ?1 AND state IN ('pending', 'complete')",
            [v as i64],
        )?,
    };
    if completed != 1 {
        return Err(StoreError::InvalidArgument(format!(
            "the server bootstrapped subscription set {version}, which is not pending here"
        )));
    }
    conn.execute(
        "UPDATE _tandem_subscription_set SET state = 'superseded'
         WHERE version < ?1 AND state IN ('pending', 'complete')",
        [version as i64],
    )?;
    Ok(())
}

impl Database {
    /// The latest subscription set (version 0, empty and complete, until the first update).
    pub fn subscriptions(&self) -> Result<SubscriptionSet, StoreError> {
        latest(self.read()?.connection())
    }

    /// The active subscription set: the newest complete one (what the local file holds).
    pub fn active_subscriptions(&self) -> Result<SubscriptionSet, StoreError> {
        active(self.read()?.connection())
    }

    /// Subscription set `version`, if it exists.
    pub fn subscription_set(&self, version: u64) -> Result<Option<SubscriptionSet>, StoreError> {
        if version == 0 {
            return Ok(Some(initial()));
        }
        self.read()?
            .connection()
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM _tandem_subscription_set WHERE version = ?1"
            ))?
            .query_row([version as i64], row)
            .optional()?
            .map(to_set)
            .transpose()
    }

    /// Edits the latest subscription set and commits the result as the next version,
    /// [`SubscriptionSetState::Pending`] until a sync session has its bootstrap (realm-core's
    /// `MutableSubscriptionSet::commit`). Returns the new set, or the latest unchanged when
    /// `edit` changed nothing. Pending sets older than the new one stay pending and are
    /// superseded when a newer set completes.
    ///
    /// ```
    /// # use tandem::model::{ClassSchema, Property, PropertyType, Schema, Value};
    /// # use tandem::store::{Config, Database, SubscriptionSetState};
    /// # let dir = tempfile::Builder::new().prefix("tandem-subs-doc-").tempdir()?;
    /// # let path = dir.path().join("subs.db");
    /// let schema = Schema::new(vec![ClassSchema::top_level("Task", "_id", vec![
    ///     Property::new("_id", PropertyType::Int),
    ///     Property::new("done", PropertyType::Bool),
    /// ])])?;
    /// let db = Database::open(&path, &schema, Config::default())?;
    /// let set = db.update_subscriptions(|subs| {
    ///     subs.add(Some("open"), "Task", "done == $0", &[Value::Bool(false)])?;
    ///     Ok(())
    /// })?;
    /// assert_eq!((set.version, &set.state), (1, &SubscriptionSetState::Pending));
    /// assert_eq!(set.find("open").unwrap().query, "done == false");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn update_subscriptions(
        &self,
        edit: impl FnOnce(&mut MutableSubscriptionSet<'_>) -> Result<(), StoreError>,
    ) -> Result<SubscriptionSet, StoreError> {
        let set = self.with_writer(|conn, schemas| {
            let current = latest(conn)?;
            let mut m = MutableSubscriptionSet {
                schemas,
                subscriptions: current.subscriptions.clone(),
            };
            edit(&mut m)?;
            if m.subscriptions == current.subscriptions {
                return Ok(None);
            }
            let next = SubscriptionSet {
                version: current.version + 1,
                state: SubscriptionSetState::Pending,
                subscriptions: m.subscriptions,
            };
            // The set is sent once everything committed before it is uploaded, so the server
            // knows every class and property it names (realm-core's snapshot version).
            let snapshot = super::history::last_version(conn)?;
            conn.execute(
                "INSERT INTO _tandem_subscription_set (version, state, error, subscriptions, snapshot_version)
                 VALUES (?1, 'pending', NULL, ?2, ?3)",
                params![
                    next.version as i64,
                    encode_subscriptions(&next.subscriptions),
                    snapshot as i64
                ],
            )?;
            Ok(Some(next))
        })?;
        match set {
            Some(set) => {
                // Wakes a sync session to send the new set.
                self.run_commit_hooks();
                Ok(set)
            }
            None => self.subscriptions(),
        }
    }

    /// The set a session sends next as QUERY: the newest pending set newer than `after` (the
    /// last set this connection sent, in IDENT or QUERY), once the local versions committed
    /// before it are uploaded (`uploaded_through`); the pending sets between `after` and it
    /// are then superseded: never sent on this connection, the server will not bootstrap them
    /// (it only needs the newest, and queues at most 64). Sets this connection sent stay
    /// pending: the server bootstraps each, and the view it records for this file follows
    /// them, so each becomes complete in turn (superseded when a newer one completes), and
    /// the active set this file reports at its next IDENT matches what it integrated (a set
    /// superseded after it was sent had its bootstrap refused, and the server's record of the
    /// view went one way and the file another: flexible seeds 106 and 2725 of the
    /// simulation, docs/testing.md). `None` while there is none or it must wait for uploads.
    #[cfg(feature = "client")]
    pub(crate) fn next_subscription_set(
        &self,
        after: u64,
        uploaded_through: u64,
    ) -> Result<Option<SubscriptionSet>, StoreError> {
        let newest = self
            .read()?
            .connection()
            .prepare_cached(&format!(
                "SELECT {COLUMNS}, snapshot_version FROM _tandem_subscription_set
                 WHERE version > ?1 AND state = 'pending' ORDER BY version DESC LIMIT 1"
            ))?
            .query_row([after as i64], |r| Ok((row(r)?, r.get::<_, i64>(4)?)))
            .optional()?;
        let Some((newest, snapshot)) = newest else {
            return Ok(None);
        };
        if snapshot as u64 > uploaded_through {
            return Ok(None);
        }
        let set = to_set(newest)?;
        self.with_writer(|conn, _| {
            conn.execute(
                "UPDATE _tandem_subscription_set SET state = 'superseded'
                 WHERE version < ?1 AND version > ?2 AND state = 'pending'",
                params![set.version as i64, after.min(i64::MAX as u64) as i64],
            )?;
            Ok(())
        })?;
        Ok(Some(set))
    }

    /// Records the server's QUERY_ERROR for set `version` (a set already complete or
    /// superseded is left as it is).
    #[cfg(feature = "client")]
    pub(crate) fn fail_subscription_set(
        &self,
        version: u64,
        message: &str,
    ) -> Result<(), StoreError> {
        self.with_writer(|conn, _| {
            conn.execute(
                "UPDATE _tandem_subscription_set SET state = 'error', error = ?2
                 WHERE version = ?1 AND state = 'pending'",
                params![version as i64, message],
            )?;
            Ok(())
        })
    }

    /// Integrates a flexible sync bootstrap (every batch of it, in order) for subscription set
    /// `query_version`, and marks that set complete, in one transaction: after a crash either
    /// both happened or neither (then the server bootstraps the set again).
    #[cfg(feature = "client")]
    pub(crate) fn integrate_bootstrap(
        &self,
        entries: Vec<super::Incoming>,
        cursors: DownloadCursors,
        query_version: u64,
    ) -> Result<(), StoreError> {
        self.integrate_download_then(entries, cursors, |conn| complete(conn, query_version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "client")]
    fn only_sets_never_sent_on_the_connection_are_superseded_by_a_newer_one() {
        use crate::model::{ClassSchema, Property, PropertyType, Schema};
        let dir = tempfile::TempDir::new().unwrap();
        let schema = Schema::new(vec![ClassSchema::top_level(
            "Task",
            "_id",
            vec![Property::new("_id", PropertyType::Int)],
        )])
        .unwrap();
        let db = Database::open(dir.path().join("a.sqlite"), &schema, Default::default()).unwrap();
        let subscribe = |query: &str| {
            db.update_subscriptions(|m| {
                m.clear();
                m.add(None, "Task", query, &[]).map(drop)
            })
            .unwrap()
            .version
        };
        let states = || -> Vec<(u64, SubscriptionSetState)> {
            (1..=4)
                .map(|v| (v, db.subscription_set(v).unwrap().unwrap().state))
                .collect()
        };
        let (one, two) = (subscribe("_id < 1"), subscribe("_id < 2"));
        // The connection sent set 0 at IDENT: set 2 goes, set 1 was never sent.
        let sent = db.next_subscription_set(0, u64::MAX).unwrap().unwrap();
        assert_eq!(sent.version, two);
        let three = subscribe("_id < 3");
        let four = subscribe("_id < 4");
        // Set 2 was sent on this connection: the server bootstraps it, so it stays pending;
        // set 3 never was.
        let sent = db.next_subscription_set(two, u64::MAX).unwrap().unwrap();
        assert_eq!(sent.version, four);
        use SubscriptionSetState::{Pending, Superseded};
        assert_eq!(
            states(),
            [
                (one, Superseded),
                (two, Pending),
                (three, Superseded),
                (four, Pending)
            ]
        );
        // Its bootstrap is taken, then set 4's.
        db.with_writer(|conn, _| complete(conn, two)).unwrap();
        assert_eq!(
            db.subscription_set(two).unwrap().unwrap().state,
            SubscriptionSetState::Complete
        );
        db.with_writer(|conn, _| complete(conn, four)).unwrap();
        assert_eq!(db.subscription_set(two).unwrap().unwrap().state, Superseded);
        // A set this file never sent is still refused.
        let refused = db.with_writer(|conn, _| complete(conn, 9)).unwrap_err();
        assert!(refused.to_string().contains("not pending"), "{refused}");
    }

    #[test]
    fn wire_body_groups_queries_by_class() {
        let set = SubscriptionSet {
            version: 3,
            state: SubscriptionSetState::Pending,
            subscriptions: vec![
                Subscription {
                    name: Some("a".into()),
                    class: "Task".into(),
                    query: "done == false".into(),
                },
                Subscription {
                    name: None,
                    class: "Item".into(),
                    query: "TRUEPREDICATE".into(),
                },
                Subscription {
                    name: None,
                    class: "Task".into(),
                    query: "n > 2".into(),
                },
            ],
        };
        assert_eq!(
            set.wire_body(),
            r#"{"Item":"(TRUEPREDICATE)","Task":"(done == false) OR (n > 2)"}"#
        );
        assert_eq!(
            SubscriptionSet {
                subscriptions: vec![],
                ..set
            }
            .wire_body(),
            "{}"
        );
    }

    #[test]
    fn stored_subscriptions_round_trip() {
        let subs = vec![Subscription {
            name: None,
            class: "T\"x".into(),
            query: "a == B64\"IkEi\"".into(),
        }];
        assert_eq!(
            decode_subscriptions(1, &encode_subscriptions(&subs)).unwrap(),
            subs
        );
        assert!(decode_subscriptions(1, "[{}]").is_err());
    }
}
