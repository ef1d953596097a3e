//! Who may sync which partition: the small rule set of `--sync-permissions`.
//!
//! Rules are comma-separated; a partition is allowed if any rule allows it:
//! - `all-authenticated`: every logged-in user may read and write every partition (the
//!   default, for development);
//! - `user-id`: a user may read and write the string partition equal to their user id;
//! - `shared:<p1>|<p2>|...`: the listed string partitions, for every user.
//!
//! A refused BIND gets JSON_ERROR 206 `permission_denied` (action `ApplicationBug`).

use std::fmt;
use std::str::FromStr;

use super::partition::Partition;

/// One rule of `--sync-permissions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// `all-authenticated`.
    AllAuthenticated,
    /// `user-id`.
    UserId,
    /// `shared:<p1>|<p2>`: these string partitions.
    Shared(Vec<String>),
}

/// The partition rules of a server (default: `all-authenticated`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncPermissions {
    rules: Vec<Rule>,
}

impl Default for SyncPermissions {
    fn default() -> Self {
        SyncPermissions {
            rules: vec![Rule::AllAuthenticated],
        }
    }
}

/// A `--sync-permissions` value that is not a rule list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError(pub String);

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RuleError {}

impl FromStr for SyncPermissions {
    type Err = RuleError;

    /// Parses `user-id,shared:team|public`; an empty list or an unknown rule is an error.
    fn from_str(text: &str) -> Result<Self, RuleError> {
        let mut rules = Vec::new();
        for rule in text.split(',').map(str::trim) {
            rules.push(match rule {
                "all-authenticated" => Rule::AllAuthenticated,
                "user-id" => Rule::UserId,
                _ => match rule.strip_prefix("shared:") {
                    Some(list) if list.split('|').all(|p| !p.is_empty()) => {
                        Rule::Shared(list.split('|').map(str::to_owned).collect())
                    }
                    _ => {
                        return Err(RuleError(format!(
                            "unknown sync permission rule {rule:?}: expected all-authenticated, \
                             user-id or shared:<partition>|<partition>..."
                        )))
                    }
                },
            });
        }
        Ok(SyncPermissions { rules })
    }
}

impl SyncPermissions {
    /// The rules, in the order given.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether `user_id` may read and write `partition`.
    pub fn allows(&self, user_id: &str, partition: &Partition) -> bool {
        self.rules.iter().any(|rule| match rule {
            Rule::AllAuthenticated => true,
            Rule::UserId => partition.as_str() == Some(user_id),
            Rule::Shared(list) => partition
                .as_str()
                .is_some_and(|p| list.iter().any(|s| s == p)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::partition::partition;
    use super::*;

    #[test]
    fn rules_decide_per_user_and_partition() {
        let rules: SyncPermissions = "user-id, shared:team|public".parse().unwrap();
        let p = |s: &str| partition(s).unwrap();
        assert!(rules.allows("u1", &p("\"u1\"")));
        assert!(!rules.allows("u1", &p("\"u2\"")));
        assert!(rules.allows("u1", &p("\"team\"")));
        assert!(rules.allows("u2", &p("\"public\"")));
        assert!(!rules.allows("u1", &p("null")));
        assert!(!rules.allows("5", &p("{\"$numberInt\":\"5\"}")));
        assert!(SyncPermissions::default().allows("anyone", &p("null")));
        for bad in ["", "owner", "shared:", "shared:a||b", "user-id,"] {
            assert!(bad.parse::<SyncPermissions>().is_err(), "{bad:?}");
        }
    }
}
