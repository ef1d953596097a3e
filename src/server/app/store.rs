//! `<data_dir>/app.sqlite`: the App Services users, their identities, `local-userpass`
//! accounts, refresh sessions and API keys.
//!
//! The schema version is SQLite's `user_version` ([`SCHEMA_VERSION`]); a file written by a
//! newer server is refused rather than misread. The app id the file was created for is kept in
//! `meta` and must match the configured one. Deleting a user cascades (foreign keys) to its
//! identities, account, sessions and API keys. Secrets (API keys, confirmation tokens) are
//! stored only as SHA-256 hashes; passwords only as argon2 PHC strings.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::{AppError, Provider};

/// The schema this server writes (SQLite `user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// The file name inside the data directory.
pub const FILE_NAME: &str = "app.sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS identities (
    provider TEXT NOT NULL,
    id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (provider, id)
);
CREATE INDEX IF NOT EXISTS identities_by_user ON identities (user_id);
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    email_key TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL,
    password TEXT NOT NULL,
    user_id TEXT REFERENCES users (id) ON DELETE CASCADE,
    token_id TEXT UNIQUE,
    token_hash BLOB
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    server INTEGER NOT NULL,
    name TEXT NOT NULL,
    key_hash BLOB NOT NULL UNIQUE,
    disabled INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS api_key_names ON api_keys (user_id, name) WHERE server = 0;
CREATE UNIQUE INDEX IF NOT EXISTS server_key_names ON api_keys (name) WHERE server = 1;
";

/// A `local-userpass` account.
#[derive(Clone, Debug)]
pub struct Account {
    /// The identity id (24-hex ObjectId).
    pub id: String,
    /// The address as registered (the normalised form is the lookup key).
    pub email: String,
    /// Argon2 PHC string.
    pub password: String,
    /// The user, once confirmed.
    pub user_id: Option<String>,
}

/// An API key as listed (never the key itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyInfo {
    /// 24-hex ObjectId.
    pub id: String,
    /// The name given at creation.
    pub name: String,
    /// Whether logins with it are refused.
    pub disabled: bool,
}

/// An API key found by its hash.
pub struct KeyOwner {
    /// The key's id.
    pub id: String,
    /// The user it logs in as.
    pub user_id: String,
    /// Whether logins with it are refused.
    pub disabled: bool,
}

/// A user's profile as stored.
pub struct Profile {
    /// `normal`, or `server` for a server API key's user.
    pub kind: String,
    /// `(provider_type, id)` of each identity.
    pub identities: Vec<(String, String)>,
    /// The profile data object (string values only).
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// The open store.
pub struct Store {
    conn: Connection,
    /// With `--database`: this file is a working copy of the store kept in PostgreSQL
    /// ([`crate::server::postgres`]).
    #[cfg(feature = "postgres")]
    replica: Option<std::sync::Arc<crate::server::postgres::Replica>>,
}

/// The name of the App Services store in `tandem_file` (server paths start with `/`).
#[cfg(feature = "postgres")]
pub const REPLICA_NAME: &str = "app-services";

fn sql(e: rusqlite::Error) -> AppError {
    AppError(format!("app store: {e}"))
}

/// Whether `e` is a UNIQUE or PRIMARY KEY violation.
pub fn is_conflict(e: &AppError) -> bool {
    e.0.contains("UNIQUE constraint failed")
}

fn insert_user(
    conn: &Connection,
    user_id: &str,
    kind: &str,
    data: &serde_json::Map<String, serde_json::Value>,
    identity: (Provider, &str),
    now: u64,
) -> Result<(), AppError> {
    conn.execute(
        "INSERT INTO users (id, kind, data, created) VALUES (?1, ?2, ?3, ?4)",
        params![
            user_id,
            kind,
            serde_json::Value::Object(data.clone()).to_string(),
            now as i64
        ],
    )
    .map_err(sql)?;
    conn.execute(
        "INSERT INTO identities (provider, id, user_id) VALUES (?1, ?2, ?3)",
        params![identity.0.name(), identity.1, user_id],
    )
    .map(drop)
    .map_err(sql)
}

/// Why the store could not be opened: the storage failed (a full disk, an I/O error; worth
/// trying again later), or the file is not this server's to open (another app's, a newer
/// server's schema, not a database).
pub(crate) enum OpenFault {
    /// The storage failed: worth trying again later.
    Storage(AppError),
    /// The file is not this server's to open.
    Config(AppError),
}

impl From<rusqlite::Error> for OpenFault {
    /// A full disk, an I/O error, a file that cannot be opened or is locked, no memory: the
    /// storage, worth trying again. Anything else (a file that is not a database, a corrupt
    /// one) is not going to mend by itself.
    fn from(e: rusqlite::Error) -> OpenFault {
        use rusqlite::ErrorCode as C;
        let storage = matches!(
            e.sqlite_error_code(),
            Some(
                C::DiskFull
                    | C::SystemIoFailure
                    | C::CannotOpen
                    | C::DatabaseBusy
                    | C::DatabaseLocked
                    | C::OutOfMemory
                    | C::ReadOnly
            )
        );
        if storage {
            OpenFault::Storage(sql(e))
        } else {
            OpenFault::Config(sql(e))
        }
    }
}

impl From<OpenFault> for AppError {
    fn from(f: OpenFault) -> AppError {
        match f {
            OpenFault::Storage(e) | OpenFault::Config(e) => e,
        }
    }
}

impl Store {
    /// Opens (creating if needed) `<data_dir>/app.sqlite`. With `app_id`, a new file records it
    /// and an existing file must have been created for the same app.
    pub fn open(data_dir: &Path, app_id: Option<&str>) -> Result<Store, AppError> {
        Ok(Store::open_or_fault(data_dir, app_id)?)
    }

    /// [`Store::open`], saying whether a failure was the storage failing (worth trying again)
    /// or the file not being this server's to open.
    pub(crate) fn open_or_fault(data_dir: &Path, app_id: Option<&str>) -> Result<Store, OpenFault> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            OpenFault::Storage(AppError(format!(
                "data directory {}: {e}",
                data_dir.display()
            )))
        })?;
        let conn = Store::open_conn(&data_dir.join(FILE_NAME), "FULL")?;
        Store::finish(
            Store {
                conn,
                #[cfg(feature = "postgres")]
                replica: None,
            },
            data_dir,
            app_id,
        )
    }

    /// Opens the file at `file` with the schema (refusing a newer one).
    fn open_conn(file: &Path, synchronous: &str) -> Result<Connection, OpenFault> {
        let conn = Connection::open(file)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", synchronous)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(OpenFault::Config(AppError(format!(
                "{FILE_NAME} has schema version {version}; this server knows up to \
                 {SCHEMA_VERSION} (a newer tandem-server wrote it)"
            ))));
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(conn)
    }

    /// The store's tables, as [`crate::server::postgres`] mirrors them (`tandem_app_<table>`).
    #[cfg(feature = "postgres")]
    pub(crate) fn mirrored_tables(
    ) -> Result<crate::server::postgres::Tables, crate::server::postgres::PostgresError> {
        let fail = |e: rusqlite::Error| {
            crate::server::postgres::PostgresError::from_message(format!("app store: {e}"))
        };
        let conn = Connection::open_in_memory().map_err(fail)?;
        conn.execute_batch(SCHEMA).map_err(fail)?;
        crate::server::postgres::Tables::read(&conn, "tandem_app_")
    }

    /// Opens the working copy in `cache_dir` of the store kept in PostgreSQL: removed first,
    /// then filled from the database. `app_id` as for [`Store::open`].
    #[cfg(feature = "postgres")]
    pub(crate) fn open_replica(
        cache_dir: &Path,
        pg: &std::sync::Arc<crate::server::postgres::Postgres>,
        app_id: Option<&str>,
    ) -> Result<Store, AppError> {
        let pg_err =
            |e: crate::server::postgres::PostgresError| AppError(format!("app store: {e}"));
        std::fs::create_dir_all(cache_dir)
            .map_err(|e| AppError(format!("{}: {e}", cache_dir.display())))?;
        let file = cache_dir.join(FILE_NAME);
        crate::server::postgres::remove_working_copy(&file)
            .map_err(|e| AppError(format!("removing an old working copy: {e}")))?;
        let tables = Store::mirrored_tables().map_err(pg_err)?;
        let replica = std::sync::Arc::new(
            crate::server::postgres::Replica::new(pg, REPLICA_NAME, std::sync::Arc::new(tables))
                .map_err(pg_err)?,
        );
        let conn = Store::open_conn(&file, "OFF")?;
        replica.attach(&conn).map_err(pg_err)?;
        replica.acquire(&conn).map_err(pg_err)?;
        let store = Store::finish(
            Store {
                conn,
                replica: Some(std::sync::Arc::clone(&replica)),
            },
            cache_dir,
            app_id,
        );
        if let Ok(s) = &store {
            replica.release(&s.conn);
        }
        Ok(store?)
    }

    /// Brings a working copy up to PostgreSQL under its lock, kept until [`Store::release`];
    /// nothing without `--database`. A failure leaves the copy as it was (its writes are
    /// refused until a later acquire succeeds).
    pub(crate) fn acquire(&mut self) -> Result<(), AppError> {
        #[cfg(feature = "postgres")]
        if let Some(r) = &self.replica {
            r.acquire(&self.conn)
                .map_err(|e| AppError(format!("app store: {e}")))?;
        }
        Ok(())
    }

    /// Releases what [`Store::acquire`] took.
    pub(crate) fn release(&mut self) {
        #[cfg(feature = "postgres")]
        if let Some(r) = &self.replica {
            r.release(&self.conn);
        }
    }

    /// The app id recorded in the store, if any.
    #[cfg(feature = "postgres")]
    pub(crate) fn app_id(&self) -> Result<Option<String>, AppError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = 'app_id'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql)
    }

    /// Checks and records the app id.
    fn finish(store: Store, data_dir: &Path, app_id: Option<&str>) -> Result<Store, OpenFault> {
        let conn = &store.conn;
        let stored: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'app_id'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match (stored, app_id) {
            (Some(stored), Some(wanted)) if stored != wanted => {
                return Err(OpenFault::Config(AppError(format!(
                    "{} belongs to app {stored:?}, not {wanted:?}",
                    data_dir.join(FILE_NAME).display()
                ))))
            }
            (None, Some(wanted)) => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('app_id', ?1)",
                    [wanted],
                )?;
            }
            _ => {}
        }
        Ok(store)
    }

    /// Creates a user (`kind` `normal` or `server`) with one identity.
    pub fn create_user(
        &mut self,
        user_id: &str,
        kind: &str,
        data: &serde_json::Map<String, serde_json::Value>,
        identity: (Provider, &str),
        now: u64,
    ) -> Result<(), AppError> {
        let tx = self.conn.transaction().map_err(sql)?;
        insert_user(&tx, user_id, kind, data, identity, now)?;
        tx.commit().map_err(sql)
    }

    /// The user an identity belongs to.
    pub fn user_for_identity(
        &self,
        provider: Provider,
        id: &str,
    ) -> Result<Option<String>, AppError> {
        self.conn
            .query_row(
                "SELECT user_id FROM identities WHERE provider = ?1 AND id = ?2",
                params![provider.name(), id],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)
    }

    /// Replaces a user's profile data.
    pub fn set_user_data(
        &self,
        user_id: &str,
        data: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), AppError> {
        self.conn
            .execute(
                "UPDATE users SET data = ?2 WHERE id = ?1",
                params![user_id, serde_json::Value::Object(data.clone()).to_string()],
            )
            .map(drop)
            .map_err(sql)
    }

    /// A user's profile data, `None` if the user does not exist.
    pub fn user_data(
        &self,
        user_id: &str,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, AppError> {
        let text: Option<String> = self
            .conn
            .query_row("SELECT data FROM users WHERE id = ?1", [user_id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql)?;
        Ok(text.map(|t| match serde_json::from_str(&t) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        }))
    }

    /// Whether the user exists.
    pub fn user_exists(&self, user_id: &str) -> Result<bool, AppError> {
        self.conn
            .query_row("SELECT 1 FROM users WHERE id = ?1", [user_id], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(sql)
    }

    /// How many users there are.
    pub fn user_count(&self) -> Result<u64, AppError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM users", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(sql)
    }

    /// A user's profile, if the user exists.
    pub fn profile(&self, user_id: &str) -> Result<Option<Profile>, AppError> {
        let Some((kind, data)): Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT kind, data FROM users WHERE id = ?1",
                [user_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql)?
        else {
            return Ok(None);
        };
        let data = match serde_json::from_str(&data) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        let mut stmt = self
            .conn
            .prepare_cached("SELECT provider, id FROM identities WHERE user_id = ?1 ORDER BY rowid")
            .map_err(sql)?;
        let identities = stmt
            .query_map([user_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)?;
        Ok(Some(Profile {
            kind,
            identities,
            data,
        }))
    }

    /// Deletes a user and (by cascade) its identities, account, sessions and API keys.
    /// Returns whether it existed.
    pub fn delete_user(&self, user_id: &str) -> Result<bool, AppError> {
        self.conn
            .execute("DELETE FROM users WHERE id = ?1", [user_id])
            .map(|n| n > 0)
            .map_err(sql)
    }

    /// Adds an unconfirmed (or, with `user_id`, confirmed) account. A taken address is a
    /// conflict ([`is_conflict`]).
    pub fn insert_account(
        &self,
        account: &Account,
        email_key: &str,
        token: Option<(&str, &[u8])>,
    ) -> Result<(), AppError> {
        let (token_id, token_hash) = token.unzip();
        self.conn
            .execute(
                "INSERT INTO accounts (id, email_key, email, password, user_id, token_id,
                 token_hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    account.id,
                    email_key,
                    account.email,
                    account.password,
                    account.user_id,
                    token_id,
                    token_hash
                ],
            )
            .map(drop)
            .map_err(sql)
    }

    /// The account registered under a normalised address.
    pub fn account(&self, email_key: &str) -> Result<Option<Account>, AppError> {
        self.conn
            .query_row(
                "SELECT id, email, password, user_id FROM accounts WHERE email_key = ?1",
                [email_key],
                |r| {
                    Ok(Account {
                        id: r.get(0)?,
                        email: r.get(1)?,
                        password: r.get(2)?,
                        user_id: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(sql)
    }

    /// The account holding confirmation token `token_id`, with the token's hash.
    pub fn account_by_token(&self, token_id: &str) -> Result<Option<(Account, Vec<u8>)>, AppError> {
        self.conn
            .query_row(
                "SELECT id, email, password, user_id, token_hash FROM accounts
                 WHERE token_id = ?1",
                [token_id],
                |r| {
                    Ok((
                        Account {
                            id: r.get(0)?,
                            email: r.get(1)?,
                            password: r.get(2)?,
                            user_id: r.get(3)?,
                        },
                        r.get(4)?,
                    ))
                },
            )
            .optional()
            .map_err(sql)
    }

    /// Replaces an unconfirmed account's confirmation token.
    pub fn set_account_token(
        &self,
        account_id: &str,
        token_id: &str,
        token_hash: &[u8],
    ) -> Result<(), AppError> {
        self.conn
            .execute(
                "UPDATE accounts SET token_id = ?2, token_hash = ?3 WHERE id = ?1",
                params![account_id, token_id, token_hash],
            )
            .map(drop)
            .map_err(sql)
    }

    /// Marks an account confirmed: creates its user and identity and drops the token, in one
    /// transaction.
    pub fn confirm_account(
        &mut self,
        account: &Account,
        user_id: &str,
        data: &serde_json::Map<String, serde_json::Value>,
        now: u64,
    ) -> Result<(), AppError> {
        let tx = self.conn.transaction().map_err(sql)?;
        insert_user(
            &tx,
            user_id,
            "normal",
            data,
            (Provider::UserPassword, &account.id),
            now,
        )?;
        tx.execute(
            "UPDATE accounts SET user_id = ?2, token_id = NULL, token_hash = NULL WHERE id = ?1",
            params![account.id, user_id],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)
    }

    /// Starts a refresh session.
    pub fn create_session(&self, id: &str, user_id: &str, expires: u64) -> Result<(), AppError> {
        self.conn
            .execute(
                "INSERT INTO sessions (id, user_id, expires) VALUES (?1, ?2, ?3)",
                params![id, user_id, expires as i64],
            )
            .map(drop)
            .map_err(sql)
    }

    /// A session's user and expiry.
    pub fn session(&self, id: &str) -> Result<Option<(String, u64)>, AppError> {
        self.conn
            .query_row(
                "SELECT user_id, expires FROM sessions WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
            )
            .optional()
            .map_err(sql)
    }

    /// Ends a session (and, by the way, every expired one). Returns whether it existed.
    pub fn delete_session(&self, id: &str, now: u64) -> Result<bool, AppError> {
        self.conn
            .execute("DELETE FROM sessions WHERE expires <= ?1", [now as i64])
            .map_err(sql)?;
        self.conn
            .execute("DELETE FROM sessions WHERE id = ?1", [id])
            .map(|n| n > 0)
            .map_err(sql)
    }

    /// Deletes an anonymous user (exactly one identity, `anon-user`) that has no open session
    /// left. realm-core removes an anonymous user locally at logout and never logs it in again
    /// (`realm-wire-compat.md` §1.4), so nothing could reach it. Returns whether it was deleted.
    pub fn delete_if_abandoned_anonymous(&self, user_id: &str) -> Result<bool, AppError> {
        self.conn
            .execute(
                "DELETE FROM users WHERE id = ?1
                 AND (SELECT COUNT(*) FROM identities WHERE user_id = ?1) = 1
                 AND EXISTS (SELECT 1 FROM identities WHERE user_id = ?1 AND provider = ?2)
                 AND NOT EXISTS (SELECT 1 FROM sessions WHERE user_id = ?1)",
                params![user_id, Provider::Anonymous.name()],
            )
            .map(|n| n > 0)
            .map_err(sql)
    }

    /// Stores an API key (`server`: made by the admin command, else a user's own key). A
    /// taken name is a conflict ([`is_conflict`]).
    pub fn insert_api_key(
        &self,
        id: &str,
        user_id: &str,
        server: bool,
        name: &str,
        key_hash: &[u8],
        now: u64,
    ) -> Result<(), AppError> {
        self.conn
            .execute(
                "INSERT INTO api_keys (id, user_id, server, name, key_hash, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, user_id, server, name, key_hash, now as i64],
            )
            .map(drop)
            .map_err(sql)
    }

    /// Creates a server API key and the `server` user it logs in as (identity `api-key`, the
    /// key's id), in one transaction. A taken name is a conflict ([`is_conflict`]).
    pub fn create_server_api_key(
        &mut self,
        user_id: &str,
        key_id: &str,
        name: &str,
        key_hash: &[u8],
        now: u64,
    ) -> Result<(), AppError> {
        let tx = self.conn.transaction().map_err(sql)?;
        let no_data = serde_json::Map::new();
        insert_user(
            &tx,
            user_id,
            "server",
            &no_data,
            (Provider::ApiKey, key_id),
            now,
        )?;
        tx.execute(
            "INSERT INTO api_keys (id, user_id, server, name, key_hash, created)
             VALUES (?1, ?2, 1, ?3, ?4, ?5)",
            params![key_id, user_id, name, key_hash, now as i64],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)
    }

    /// The key with this hash.
    pub fn api_key_by_hash(&self, key_hash: &[u8]) -> Result<Option<KeyOwner>, AppError> {
        self.conn
            .query_row(
                "SELECT id, user_id, disabled FROM api_keys WHERE key_hash = ?1",
                [key_hash],
                |r| {
                    Ok(KeyOwner {
                        id: r.get(0)?,
                        user_id: r.get(1)?,
                        disabled: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(sql)
    }

    /// A user's own API keys (`owner = Some`), or every server API key (`None`), oldest first.
    pub fn api_keys(&self, owner: Option<&str>) -> Result<Vec<ApiKeyInfo>, AppError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, name, disabled FROM api_keys
                 WHERE (?1 IS NULL AND server = 1) OR (server = 0 AND user_id = ?1)
                 ORDER BY created, rowid",
            )
            .map_err(sql)?;
        let keys = stmt
            .query_map([owner], |r| {
                Ok(ApiKeyInfo {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    disabled: r.get(2)?,
                })
            })
            .map_err(sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql);
        keys
    }

    /// Enables or disables a user's key; returns whether it exists.
    pub fn set_api_key_disabled(
        &self,
        owner: &str,
        id: &str,
        disabled: bool,
    ) -> Result<bool, AppError> {
        self.conn
            .execute(
                "UPDATE api_keys SET disabled = ?3 WHERE id = ?2 AND user_id = ?1 AND server = 0",
                params![owner, id, disabled],
            )
            .map(|n| n > 0)
            .map_err(sql)
    }

    /// Deletes a user's key (`owner = Some`) or a server key and its user (`None`); returns
    /// whether it existed.
    pub fn delete_api_key(&self, owner: Option<&str>, id: &str) -> Result<bool, AppError> {
        match owner {
            Some(owner) => self
                .conn
                .execute(
                    "DELETE FROM api_keys WHERE id = ?2 AND user_id = ?1 AND server = 0",
                    params![owner, id],
                )
                .map(|n| n > 0)
                .map_err(sql),
            None => {
                let user: Option<String> = self
                    .conn
                    .query_row(
                        "SELECT user_id FROM api_keys WHERE id = ?1 AND server = 1",
                        [id],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql)?;
                match user {
                    Some(user) => self.delete_user(&user),
                    None => Ok(false),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_persist_and_newer_schemas_are_refused() {
        let tmp = tempfile::Builder::new()
            .prefix("tandem-app-store-")
            .tempdir()
            .unwrap();
        let dir = tmp.path();
        let mut data = serde_json::Map::new();
        data.insert("name".into(), "Ann".into());
        {
            let mut store = Store::open(dir, Some("app")).unwrap();
            store
                .create_user("u1", "normal", &data, (Provider::CustomToken, "ext-1"), 5)
                .unwrap();
            store.create_session("s1", "u1", 100).unwrap();
        }
        // Reopened without an app id (as the admin command may), then with the right one.
        let store = Store::open(dir, None).unwrap();
        assert_eq!(store.user_count().unwrap(), 1);
        drop(store);
        let store = Store::open(dir, Some("app")).unwrap();
        assert_eq!(
            store
                .user_for_identity(Provider::CustomToken, "ext-1")
                .unwrap(),
            Some("u1".into())
        );
        let profile = store.profile("u1").unwrap().unwrap();
        assert_eq!(profile.data, data);
        assert_eq!(
            profile.identities,
            [("custom-token".to_owned(), "ext-1".to_owned())]
        );
        assert_eq!(store.session("s1").unwrap(), Some(("u1".into(), 100)));
        // Deleting the user takes its identity and session with it.
        assert!(store.delete_user("u1").unwrap());
        assert_eq!(store.session("s1").unwrap(), None);
        assert_eq!(
            store
                .user_for_identity(Provider::CustomToken, "ext-1")
                .unwrap(),
            None
        );
        store
            .conn
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(store);
        let err = Store::open(dir, Some("app")).err().unwrap();
        assert!(err.0.contains("schema version 2"), "{err}");
    }
}
