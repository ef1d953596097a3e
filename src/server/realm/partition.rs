//! Partition-based sync: a Realm partition value (the BIND path, canonical Extended JSON) and
//! the Tandem server path that holds its data.
//!
//! realm-core sends the partition's BSON value as canonical Extended JSON, verbatim, as the BIND
//! path (`realm-wire-compat.md` section 3.1): `"p1"`, `{"$numberInt":"5"}`,
//! `{"$numberLong":"5"}`, `{"$oid":"<24 hex>"}`, `{"$binary":{"base64":"…","subType":"04"}}`
//! (a UUID) or `null`. The server path is `/` followed by the value re-serialised compactly
//! (object keys sorted), so equal values always meet in one server file, and a Tandem client
//! that binds that path shares the file with Realm apps.

use crate::protocol::{ErrorCode, ProtocolError};

/// A partition value read from a BIND path.
#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    /// The parsed value.
    pub value: serde_json::Value,
    /// The Tandem server path: `/` + the compact canonical Extended JSON (`/"p1"`,
    /// `/{"$numberInt":"5"}`, `/null`).
    pub server_path: String,
}

impl Partition {
    /// The partition's string value (`"p1"` gives `p1`), if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        self.value.as_str()
    }
}

/// Reads a BIND path as a partition value. Anything that is not one of the partition types
/// Realm allows (string, int32, int64, ObjectId, UUID, null) in Extended JSON is refused with
/// 204 `illegal_realm_path`.
pub fn partition(path: &str) -> Result<Partition, ProtocolError> {
    let illegal = |why: &str| {
        ProtocolError::new(
            ErrorCode::IllegalRealmPath,
            format!(
                "partition {path:?} {why}: a partition is a string, int, long, ObjectId, UUID \
                 or null in canonical Extended JSON"
            ),
        )
    };
    let value: serde_json::Value =
        serde_json::from_str(path).map_err(|_| illegal("is not JSON"))?;
    let typed = |key: &str, check: &dyn Fn(&serde_json::Value) -> bool| {
        value
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.get(key))
            .is_some_and(check)
    };
    let is_int = |digits: &serde_json::Value| {
        digits
            .as_str()
            .is_some_and(|s| s.parse::<i64>().is_ok_and(|n| n.to_string() == s))
    };
    let ok = value.is_string()
        || value.is_null()
        || typed("$numberInt", &|v| {
            is_int(v) && v.as_str().is_some_and(|s| s.parse::<i32>().is_ok())
        })
        || typed("$numberLong", &is_int)
        || typed("$oid", &|v| {
            v.as_str()
                .is_some_and(|s| s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        || typed("$binary", &|v| {
            v.as_object().is_some_and(|b| {
                b.len() == 2
                    && b.get("base64").is_some_and(|x| x.is_string())
                    && b.get("subType").and_then(|x| x.as_str()) == Some("04")
            })
        });
    if !ok {
        return Err(illegal("is not a partition value"));
    }
    let canonical = serde_json::to_string(&value).map_err(|_| illegal("cannot be serialised"))?;
    Ok(Partition {
        value,
        server_path: format!("/{canonical}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_map_to_server_paths() {
        let cases = [
            ("\"p1\"", "/\"p1\""),
            ("{\"$numberInt\":\"5\"}", "/{\"$numberInt\":\"5\"}"),
            ("{ \"$numberInt\" : \"5\" }", "/{\"$numberInt\":\"5\"}"),
            ("{\"$numberLong\":\"-7\"}", "/{\"$numberLong\":\"-7\"}"),
            (
                "{\"$oid\":\"65a1b2c3d4e5f60718293a4b\"}",
                "/{\"$oid\":\"65a1b2c3d4e5f60718293a4b\"}",
            ),
            (
                "{\"$binary\":{\"subType\":\"04\",\"base64\":\"AAECAwQFBgcICQoLDA0ODw==\"}}",
                "/{\"$binary\":{\"base64\":\"AAECAwQFBgcICQoLDA0ODw==\",\"subType\":\"04\"}}",
            ),
            ("null", "/null"),
            ("\"a/b \\u00e9\"", "/\"a/b é\""),
        ];
        for (path, expected) in cases {
            assert_eq!(partition(path).unwrap().server_path, expected, "{path}");
        }
    }

    #[test]
    fn non_partitions_are_illegal_paths() {
        for path in [
            "/tasks",
            "p1",
            "",
            "5",
            "true",
            "[\"p1\"]",
            "{\"$numberInt\":\"5.5\"}",
            "{\"$numberInt\":\"99999999999\"}",
            "{\"$numberLong\":\"05\"}",
            "{\"$oid\":\"xyz\"}",
            "{\"$numberInt\":\"5\",\"x\":1}",
            "{\"$binary\":{\"base64\":\"AA==\",\"subType\":\"00\"}}",
        ] {
            let e = partition(path).unwrap_err();
            assert_eq!(e.code, ErrorCode::IllegalRealmPath, "{path}");
        }
    }
}
