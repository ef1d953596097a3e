//! Flexible sync subscriptions for foreign code: `Database.subscriptions`,
//! `Database.update_subscriptions` (a list of [`SubscriptionChange`]s committed as the next
//! set) and `SyncSession.wait_for_subscriptions`. See [`crate::store::SubscriptionSet`] for the
//! model (realm-core's).

use std::sync::Arc;

use super::database::Database;
use super::sync::{block_on, CancelToken, SyncSession};
use super::types::{core_value, TandemError, Value};
use crate::store;

/// One subscription: the objects of `class_name` matching `query`.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Subscription {
    /// Its name, if it has one (unique within a set).
    pub name: Option<String>,
    /// The class.
    pub class_name: String,
    /// The query as the server evaluates it (arguments inlined).
    pub query: String,
}

/// Where a subscription set stands.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum SubscriptionSetState {
    /// Waiting for the server's bootstrap of it.
    Pending,
    /// Its bootstrap is integrated: the active set.
    Complete,
    /// The server could not evaluate it; the active set is unchanged.
    Error {
        /// The server's message.
        message: String,
    },
    /// A newer set completed first.
    Superseded,
}

/// One version of the subscriptions.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct SubscriptionSet {
    /// 0 for the empty set a file starts with, then one more per update.
    pub version: u64,
    /// Where it stands.
    pub state: SubscriptionSetState,
    /// Its subscriptions, in the order they were added.
    pub subscriptions: Vec<Subscription>,
}

/// One edit of `Database.update_subscriptions`.
#[derive(Clone, Debug, PartialEq, uniffi::Enum)]
pub enum SubscriptionChange {
    /// Subscribe to `class_name` objects matching `query` (`$0`, `$1`... from `args`). A name
    /// replaces the subscription of that name; without one, the same class and query are
    /// subscribed once.
    Add {
        /// Optional name.
        name: Option<String>,
        /// The class.
        class_name: String,
        /// The query (the query language of `Database.query`, without SORT, DISTINCT, LIMIT).
        query: String,
        /// Its arguments.
        args: Vec<Value>,
    },
    /// Remove the subscription called `name` (nothing if there is none).
    Remove {
        /// Its name.
        name: String,
    },
    /// Remove every subscription on `class_name`.
    RemoveClass {
        /// The class.
        class_name: String,
    },
    /// Remove every subscription.
    Clear,
}

fn set(s: store::SubscriptionSet) -> SubscriptionSet {
    SubscriptionSet {
        version: s.version,
        state: match s.state {
            store::SubscriptionSetState::Pending => SubscriptionSetState::Pending,
            store::SubscriptionSetState::Complete => SubscriptionSetState::Complete,
            store::SubscriptionSetState::Error(message) => SubscriptionSetState::Error { message },
            store::SubscriptionSetState::Superseded => SubscriptionSetState::Superseded,
        },
        subscriptions: s
            .subscriptions
            .into_iter()
            .map(|s| Subscription {
                name: s.name,
                class_name: s.class,
                query: s.query,
            })
            .collect(),
    }
}

#[uniffi::export]
impl Database {
    /// The latest subscription set (version 0, empty and complete, until the first update).
    pub fn subscriptions(&self) -> Result<SubscriptionSet, TandemError> {
        Ok(set(self.inner.subscriptions()?))
    }

    /// The active subscription set: the newest complete one.
    pub fn active_subscriptions(&self) -> Result<SubscriptionSet, TandemError> {
        Ok(set(self.inner.active_subscriptions()?))
    }

    /// Applies `changes` to the latest set and commits the result as the next version
    /// (`Pending` until a flexible sync session has its bootstrap); returns it, or the latest
    /// set unchanged when the changes change nothing. A change that fails (`InvalidArgument`:
    /// an unknown class, a query that does not compile, SORT/DISTINCT/LIMIT, a link argument)
    /// fails the call and commits nothing.
    pub fn update_subscriptions(
        &self,
        changes: Vec<SubscriptionChange>,
    ) -> Result<SubscriptionSet, TandemError> {
        let mut failed = None;
        let result = self.inner.update_subscriptions(|m| {
            for (i, change) in changes.into_iter().enumerate() {
                let outcome = match change {
                    SubscriptionChange::Add {
                        name,
                        class_name,
                        query,
                        args,
                    } => args
                        .iter()
                        .map(core_value)
                        .collect::<Result<Vec<_>, _>>()
                        .and_then(|args| Ok(m.add(name.as_deref(), &class_name, &query, &args)?))
                        .map(|_| ()),
                    SubscriptionChange::Remove { name } => {
                        m.remove(&name);
                        Ok(())
                    }
                    SubscriptionChange::RemoveClass { class_name } => {
                        m.remove_class(&class_name);
                        Ok(())
                    }
                    SubscriptionChange::Clear => {
                        m.clear();
                        Ok(())
                    }
                };
                if let Err(e) = outcome {
                    let message = format!("change {i}: {e}");
                    failed = Some(e);
                    return Err(store::StoreError::InvalidArgument(message));
                }
            }
            Ok(())
        });
        match (result, failed) {
            (Err(_), Some(e)) => Err(e),
            (result, _) => Ok(set(result?)),
        }
    }
}

#[uniffi::export]
impl SyncSession {
    /// Completes when subscription set `version` (`None`: the latest now) is no longer
    /// pending, returning it `Complete` or `Superseded`. Errors: `Sync` when the server refused
    /// the set or the session is not flexible, `Timeout`, `Stopped`.
    pub async fn wait_for_subscriptions(
        &self,
        version: Option<u64>,
        timeout_ms: Option<u64>,
    ) -> Result<SubscriptionSet, TandemError> {
        let timeout = timeout_ms.map(std::time::Duration::from_millis);
        Ok(set(self
            .inner
            .wait_for_subscriptions(version, timeout)
            .await?))
    }

    /// `wait_for_subscriptions`, blocking the calling thread; `cancel` ends the wait from
    /// another thread (`Stopped`).
    #[uniffi::method(default(cancel = None))]
    pub fn wait_for_subscriptions_blocking(
        self: Arc<Self>,
        version: Option<u64>,
        timeout_ms: Option<u64>,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<SubscriptionSet, TandemError> {
        block_on(
            async move {
                let timeout = timeout_ms.map(std::time::Duration::from_millis);
                Ok(set(self
                    .inner
                    .wait_for_subscriptions(version, timeout)
                    .await?))
            },
            cancel,
        )
    }
}
