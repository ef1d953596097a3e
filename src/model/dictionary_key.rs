//! The rule realm-core puts on dictionary keys, which Tandem enforces so that no Tandem app can
//! write, and no server accepts, a key that would make a realm-core replica abort.

use std::fmt;

/// Why realm-core refuses a dictionary key.
///
/// Source: realm-core 14.12, src/realm/dictionary.cpp, `validate_key_value`, called by
/// `Dictionary::insert` (so by every set of a dictionary value, including the sync applier's
/// `Update`, and by `insert_collection` for collections nested in a mixed dictionary) and by
/// `Dictionary::try_erase`. It throws `InvalidDictionaryKey` (`RLM_ERR_INVALID_DICTIONARY_KEY`);
/// the sync client does not catch it while integrating a download, and its process aborts.
/// The empty key is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DictionaryKeyRule {
    /// The key's first character is `$`.
    StartsWithDollar,
    /// The key contains a `.` anywhere.
    ContainsDot,
}

/// A dictionary key realm-core refuses: the key and the rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidDictionaryKey {
    /// The refused key.
    pub key: String,
    /// The rule it breaks.
    pub rule: DictionaryKeyRule,
}

impl fmt::Display for InvalidDictionaryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = match self.rule {
            DictionaryKeyRule::StartsWithDollar => "must not start with '$'",
            DictionaryKeyRule::ContainsDot => "must not contain '.'",
        };
        write!(
            f,
            "dictionary key {:?} {rule} (realm-core's dictionary key rule, RLM_ERR_INVALID_DICTIONARY_KEY)",
            self.key
        )
    }
}

impl std::error::Error for InvalidDictionaryKey {}

/// Checks a dictionary key against realm-core's rule ([`DictionaryKeyRule`]): a key must not
/// start with `$` and must not contain `.`. The `$` rule is checked first, as realm-core does.
///
/// ```
/// use tandem::model::{check_dictionary_key, DictionaryKeyRule};
/// assert!(check_dictionary_key("").is_ok());
/// assert!(check_dictionary_key("a$b").is_ok());
/// assert_eq!(check_dictionary_key("$a.b").unwrap_err().rule, DictionaryKeyRule::StartsWithDollar);
/// assert_eq!(check_dictionary_key("b.c").unwrap_err().rule, DictionaryKeyRule::ContainsDot);
/// ```
pub fn check_dictionary_key(key: &str) -> Result<(), InvalidDictionaryKey> {
    let rule = if key.starts_with('$') {
        DictionaryKeyRule::StartsWithDollar
    } else if key.contains('.') {
        DictionaryKeyRule::ContainsDot
    } else {
        return Ok(());
    };
    Err(InvalidDictionaryKey {
        key: key.to_owned(),
        rule,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realm_core_rule() {
        let cases: &[(&str, Option<DictionaryKeyRule>)] = &[
            ("", None),
            ("a", None),
            ("a$", None),
            ("a b", None),
            ("é", None),
            ("\u{2024}", None), // one dot leader, not '.'
            ("$", Some(DictionaryKeyRule::StartsWithDollar)),
            ("$a", Some(DictionaryKeyRule::StartsWithDollar)),
            ("$a.b", Some(DictionaryKeyRule::StartsWithDollar)),
            (".", Some(DictionaryKeyRule::ContainsDot)),
            ("a.", Some(DictionaryKeyRule::ContainsDot)),
            (".a", Some(DictionaryKeyRule::ContainsDot)),
            ("b.c", Some(DictionaryKeyRule::ContainsDot)),
            ("a$.b", Some(DictionaryKeyRule::ContainsDot)),
        ];
        for (key, rule) in cases {
            let got = check_dictionary_key(key).err();
            assert_eq!(got.as_ref().map(|e| e.rule), *rule, "{key:?}");
            if let Some(e) = got {
                assert_eq!(e.key, *key);
                assert!(e.to_string().contains(&format!("{key:?}")), "{e}");
            }
        }
    }
}
