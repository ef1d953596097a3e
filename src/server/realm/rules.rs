//! Flexible sync permissions: per class, which objects a user may read and which they may
//! write, as Realm's sync rules gave them (a role's read and write document filters over the
//! object's fields and the user), in a JSON rules file (`--flx-rules`).
//!
//! ```json
//! {
//!   "default": { "read": true, "write": false },
//!   "classes": {
//!     "Task": { "read": "owner == %%user.id OR shared == true", "write": "owner == %%user.id" },
//!     "Log":  { "read": false, "write": true }
//!   }
//! }
//! ```
//!
//! A filter is `true` (every object), `false` (none) or a query in the store's query language
//! (`crate::store`, the subset of Realm's that subscriptions use) in which `%%user.id` stands
//! for the user's id and `%%user.data.<field>` for a field of the user's profile data (for
//! `custom-token` users, the `name` and `email` claims of their token), each replaced by a
//! string literal (`null` when the field is absent). Classes not listed take `default`; without
//! a rules file everything may be read and written (development).
//!
//! What a session downloads is its subscriptions AND the read filter. An uploaded write to an
//! object the user may not write (the object before the write, or after it, does not match the
//! write filter) is reverted by the server and reported to the client as a compensating write
//! (JSON_ERROR 231, `realm-wire-compat.md` section 4.7; `crate::server::file::flx`).

use std::collections::BTreeMap;

use base64::Engine;

/// One filter of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Every object.
    All,
    /// No object.
    Nothing,
    /// The objects a query matches (with `%%user.*` placeholders).
    Query(String),
}

/// The read and write filters of a class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassRules {
    /// Which objects a user downloads.
    pub read: Filter,
    /// Which objects a user may create, change or erase.
    pub write: Filter,
}

/// A rules file: per-class filters and the default for the other classes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlxRules {
    default: ClassRules,
    classes: BTreeMap<String, ClassRules>,
}

impl Default for FlxRules {
    /// Everything readable and writable.
    fn default() -> Self {
        FlxRules {
            default: ClassRules {
                read: Filter::All,
                write: Filter::All,
            },
            classes: BTreeMap::new(),
        }
    }
}

/// Who a filter is evaluated for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserVars {
    /// `%%user.id`.
    pub id: String,
    /// `%%user.data.<field>`: the user's profile data.
    pub data: serde_json::Map<String, serde_json::Value>,
}

impl FlxRules {
    /// Parses a rules file (the format of the [module documentation](self)); the error says
    /// where it is wrong.
    pub fn from_json(text: &str) -> Result<FlxRules, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let object = value.as_object().ok_or("the rules are not a JSON object")?;
        for key in object.keys() {
            if key != "default" && key != "classes" {
                return Err(format!("unknown key {key:?} (expected default, classes)"));
            }
        }
        let mut rules = FlxRules::default();
        if let Some(d) = object.get("default") {
            rules.default = class_rules(d, "default")?;
        }
        if let Some(classes) = object.get("classes") {
            let classes = classes.as_object().ok_or("classes is not an object")?;
            for (class, r) in classes {
                rules
                    .classes
                    .insert(class.clone(), class_rules(r, &format!("classes.{class}"))?);
            }
        }
        Ok(rules)
    }

    /// The rules of `class`.
    pub fn class(&self, class: &str) -> &ClassRules {
        self.classes.get(class).unwrap_or(&self.default)
    }

    /// Whether every class may be read and written by everyone (no check is needed).
    pub fn is_open(&self) -> bool {
        let open = |r: &ClassRules| r.read == Filter::All && r.write == Filter::All;
        open(&self.default) && self.classes.values().all(open)
    }

    /// Whether some class restricts writes.
    pub fn restricts_writes(&self) -> bool {
        self.default.write != Filter::All || self.classes.values().any(|r| r.write != Filter::All)
    }
}

fn class_rules(value: &serde_json::Value, at: &str) -> Result<ClassRules, String> {
    let object = value
        .as_object()
        .ok_or_else(|| format!("{at} is not an object"))?;
    for key in object.keys() {
        if key != "read" && key != "write" {
            return Err(format!("{at}: unknown key {key:?} (expected read, write)"));
        }
    }
    let filter = |name: &str| -> Result<Filter, String> {
        match object.get(name) {
            None | Some(serde_json::Value::Bool(false)) => Ok(Filter::Nothing),
            Some(serde_json::Value::Bool(true)) => Ok(Filter::All),
            Some(serde_json::Value::String(q)) if !q.trim().is_empty() => {
                Ok(Filter::Query(q.clone()))
            }
            Some(_) => Err(format!("{at}.{name} is not true, false or a query string")),
        }
    };
    Ok(ClassRules {
        read: filter("read")?,
        write: filter("write")?,
    })
}

impl Filter {
    /// The filter as a query for `user`: `None` for [`Filter::Nothing`], `TRUEPREDICATE` for
    /// [`Filter::All`], else the query with its placeholders replaced by `B64"…"` string
    /// literals (so no user data can change the query's shape) or `NULL`.
    pub fn for_user(&self, user: &UserVars) -> Option<String> {
        match self {
            Filter::All => Some("TRUEPREDICATE".into()),
            Filter::Nothing => None,
            Filter::Query(q) => Some(substitute(q, user)),
        }
    }
}

/// `"%%user.id"` and `"%%user.data.<field>"` replaced by literals.
fn substitute(query: &str, user: &UserVars) -> String {
    let literal = |s: &str| {
        format!(
            "B64\"{}\"",
            base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
        )
    };
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    while let Some(at) = rest.find("%%user.") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "%%user.".len()..];
        let name_len = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(after.len());
        let name = after[..name_len].trim_end_matches('.');
        let value = if name == "id" {
            literal(&user.id)
        } else if let Some(field) = name.strip_prefix("data.") {
            match user.data.get(field) {
                Some(serde_json::Value::String(s)) => literal(s),
                Some(serde_json::Value::Bool(b)) => b.to_string(),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                _ => "NULL".into(),
            }
        } else {
            // Unknown placeholders match nothing: NULL compares equal to no stored string.
            "NULL".into()
        };
        out.push_str(&value);
        rest = &after[name.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_files_parse_and_default_to_the_default() {
        let rules = FlxRules::from_json(
            r#"{"default":{"read":true,"write":false},
                "classes":{"Task":{"read":"owner == %%user.id","write":"owner == %%user.id"},
                           "Log":{"read":false,"write":true}}}"#,
        )
        .unwrap();
        assert_eq!(rules.class("Log").read, Filter::Nothing);
        assert_eq!(rules.class("Log").write, Filter::All);
        assert_eq!(rules.class("Other").write, Filter::Nothing);
        assert_eq!(
            rules.class("Task").read,
            Filter::Query("owner == %%user.id".into())
        );
        assert!(rules.restricts_writes() && !rules.is_open());
        assert!(FlxRules::default().is_open());
        for (bad, why) in [
            ("[]", "not a JSON object"),
            (r#"{"roles":{}}"#, "unknown key"),
            (r#"{"classes":{"T":{"read":3}}}"#, "classes.T.read"),
            (r#"{"classes":{"T":{"reed":true}}}"#, "unknown key \"reed\""),
            ("{", "not JSON"),
        ] {
            let e = FlxRules::from_json(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn placeholders_become_literals_that_cannot_change_the_query() {
        let mut user = UserVars {
            id: "u\" OR TRUEPREDICATE".into(),
            ..Default::default()
        };
        user.data.insert("team".into(), "red".into());
        let q = Filter::Query(
            "owner == %%user.id AND team == %%user.data.team OR x == %%user.data.none".into(),
        );
        let text = q.for_user(&user).unwrap();
        assert_eq!(
            text,
            format!(
                "owner == B64\"{}\" AND team == B64\"{}\" OR x == NULL",
                base64::engine::general_purpose::STANDARD.encode(user.id.as_bytes()),
                base64::engine::general_purpose::STANDARD.encode(b"red")
            )
        );
        assert_eq!(Filter::All.for_user(&user).unwrap(), "TRUEPREDICATE");
        assert_eq!(Filter::Nothing.for_user(&user), None);
    }
}
