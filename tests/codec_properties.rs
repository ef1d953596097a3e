//! Property tests of the changeset codec.
//!
//! - Random valid changesets (every instruction, payload, primary key and path shape) survive
//!   `encode -> decode` unchanged, and `encode -> decode -> encode` gives identical bytes.
//! - Random byte strings and mutated valid encodings never make the decoder panic; whatever it
//!   accepts re-encodes to a fixed point.
//! - `Encoder`, given a changeset's strings and instructions, gives `Changeset::encode`'s bytes.
//! - `Changeset::stream` yields, for any bytes, the instructions `Changeset::decode` gives, or
//!   the same error.

use proptest::prelude::*;
use tandem::changeset::*;
use tandem::model::{Decimal128, ObjectId, Timestamp, Uuid};

fn intern(n: u32) -> impl Strategy<Value = InternString> {
    (0..n).prop_map(InternString)
}

fn plain_value_type() -> impl Strategy<Value = PayloadType> {
    prop::sample::select(vec![
        PayloadType::Int,
        PayloadType::Bool,
        PayloadType::String,
        PayloadType::Binary,
        PayloadType::Timestamp,
        PayloadType::Float,
        PayloadType::Double,
        PayloadType::Decimal,
        PayloadType::ObjectId,
        PayloadType::Uuid,
    ])
}

fn primary_key(n: u32) -> impl Strategy<Value = PrimaryKey> {
    prop_oneof![
        Just(PrimaryKey::Null),
        any::<i64>().prop_map(PrimaryKey::Int),
        intern(n).prop_map(PrimaryKey::String),
        (any::<u64>(), any::<u64>())
            .prop_map(|(hi, lo)| PrimaryKey::GlobalKey(GlobalKey { hi, lo })),
        any::<[u8; 12]>().prop_map(|b| PrimaryKey::ObjectId(ObjectId(b))),
        any::<[u8; 16]>().prop_map(|b| PrimaryKey::Uuid(Uuid(b))),
    ]
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (any::<i64>(), 0..1_000_000_000i32).prop_map(|(seconds, nanos)| {
        let nanos = if seconds < 0 {
            -nanos
        } else if seconds == 0 {
            nanos / 2
        } else {
            nanos
        };
        Timestamp::new(seconds, nanos).expect("generated timestamps are valid")
    })
}

fn decimal() -> impl Strategy<Value = Decimal128> {
    (
        any::<u128>(),
        Decimal128::MIN_EXPONENT..=Decimal128::MAX_EXPONENT,
        any::<bool>(),
    )
        .prop_map(|(c, e, s)| {
            Decimal128::from_parts(c >> 15, e, s).expect("113-bit coefficient and valid exponent")
        })
}

fn payload(n: u32) -> impl Strategy<Value = Payload> {
    prop_oneof![
        Just(Payload::Set),
        Just(Payload::List),
        Just(Payload::Erased),
        Just(Payload::Dictionary),
        Just(Payload::ObjectValue),
        Just(Payload::Null),
        (any::<u64>(), any::<u64>()).prop_map(|(hi, lo)| Payload::GlobalKey(GlobalKey { hi, lo })),
        any::<i64>().prop_map(Payload::Int),
        any::<bool>().prop_map(Payload::Bool),
        "\\PC{0,20}".prop_map(|s| Payload::String(s.into())),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Payload::Binary),
        timestamp().prop_map(Payload::Timestamp),
        any::<f32>().prop_map(Payload::Float),
        any::<f64>().prop_map(Payload::Double),
        decimal().prop_map(Payload::Decimal),
        (intern(n), primary_key(n)).prop_map(|(target_table, target)| Payload::Link(Link {
            target_table,
            target
        })),
        any::<[u8; 12]>().prop_map(|b| Payload::ObjectId(ObjectId(b))),
        any::<[u8; 16]>().prop_map(|b| Payload::Uuid(Uuid(b))),
    ]
}

fn path_element(n: u32) -> impl Strategy<Value = PathElement> {
    prop_oneof![
        any::<u32>().prop_map(PathElement::Index),
        intern(n).prop_map(PathElement::Key),
    ]
}

fn field_path(n: u32) -> impl Strategy<Value = FieldPath> {
    (
        intern(n),
        primary_key(n),
        intern(n),
        prop::collection::vec(path_element(n), 0..4),
    )
        .prop_map(|(table, object, field, path)| FieldPath {
            table,
            object,
            field,
            path: path.into(),
        })
}

/// A path that ends in a list index, as array instructions need.
fn list_path(n: u32) -> impl Strategy<Value = FieldPath> {
    (field_path(n), any::<u32>()).prop_map(|(mut p, index)| {
        p.path.push(PathElement::Index(index));
        p
    })
}

fn primary_key_spec(n: u32) -> impl Strategy<Value = PrimaryKeySpec> {
    (
        intern(n),
        prop::sample::select(vec![
            PayloadType::Int,
            PayloadType::String,
            PayloadType::ObjectId,
            PayloadType::Uuid,
            PayloadType::GlobalKey,
        ]),
        any::<bool>(),
    )
        .prop_map(|(field, key_type, nullable)| PrimaryKeySpec {
            field,
            key_type,
            nullable,
        })
}

fn table_kind(n: u32) -> impl Strategy<Value = TableKind> {
    prop_oneof![
        Just(TableKind::Embedded),
        primary_key_spec(n).prop_map(TableKind::TopLevel),
        primary_key_spec(n).prop_map(TableKind::TopLevelAsymmetric),
    ]
}

fn add_column(n: u32) -> impl Strategy<Value = AddColumn> {
    let column_type = prop_oneof![
        Just(ColumnType::Mixed),
        plain_value_type().prop_map(ColumnType::Value),
        intern(n).prop_map(|target_table| ColumnType::Link { target_table }),
    ];
    let collection = prop_oneof![
        Just(ColumnCollection::Single),
        Just(ColumnCollection::List),
        Just(ColumnCollection::Set),
        prop::sample::select(PayloadType::ALL.to_vec())
            .prop_map(|key_type| ColumnCollection::Dictionary { key_type }),
    ];
    (intern(n), intern(n), column_type, any::<bool>(), collection).prop_map(
        |(table, field, column_type, nullable, collection)| AddColumn {
            table,
            field,
            column_type,
            nullable,
            collection,
        },
    )
}

fn collection_type() -> impl Strategy<Value = CollectionType> {
    prop::sample::select(vec![
        CollectionType::Single,
        CollectionType::List,
        CollectionType::Dictionary,
        CollectionType::Set,
    ])
}

fn instruction(n: u32) -> impl Strategy<Value = Instruction> {
    let update = (field_path(n), payload(n), any::<bool>(), any::<u32>()).prop_map(
        |(path, value, is_default, prior_size)| {
            // Only one of the two travels on the wire; the other stays at its default.
            let element = path.last_index().is_some();
            Instruction::Update(Update {
                path,
                value,
                is_default: is_default && !element,
                prior_size: if element { prior_size } else { 0 },
            })
        },
    );
    prop_oneof![
        (intern(n), table_kind(n))
            .prop_map(|(table, kind)| Instruction::AddTable(AddTable { table, kind })),
        intern(n).prop_map(|table| Instruction::EraseTable { table }),
        (intern(n), primary_key(n))
            .prop_map(|(table, object)| Instruction::CreateObject { table, object }),
        (intern(n), primary_key(n))
            .prop_map(|(table, object)| Instruction::EraseObject { table, object }),
        update,
        (field_path(n), any::<i64>())
            .prop_map(|(path, value)| Instruction::AddInteger(AddInteger { path, value })),
        add_column(n).prop_map(Instruction::AddColumn),
        (intern(n), intern(n)).prop_map(|(table, field)| Instruction::EraseColumn { table, field }),
        (list_path(n), payload(n), any::<u32>()).prop_map(|(path, value, prior_size)| {
            Instruction::ArrayInsert(ArrayInsert {
                path,
                value,
                prior_size,
            })
        }),
        (list_path(n), any::<u32>(), any::<u32>()).prop_map(|(path, to, prior_size)| {
            Instruction::ArrayMove(ArrayMove {
                path,
                to,
                prior_size,
            })
        }),
        (list_path(n), any::<u32>()).prop_map(|(path, prior_size)| {
            Instruction::ArrayErase(ArrayErase { path, prior_size })
        }),
        (field_path(n), collection_type()).prop_map(|(path, collection_type)| {
            Instruction::Clear(Clear {
                path,
                collection_type,
            })
        }),
        (field_path(n), payload(n))
            .prop_map(|(path, value)| Instruction::SetInsert(SetValue { path, value })),
        (field_path(n), payload(n))
            .prop_map(|(path, value)| Instruction::SetErase(SetValue { path, value })),
    ]
}

fn changeset() -> impl Strategy<Value = Changeset> {
    prop::collection::btree_set("\\PC{0,12}", 1..8).prop_flat_map(|strings| {
        let n = strings.len() as u32;
        let strings: Vec<String> = strings.into_iter().collect();
        prop::collection::vec(instruction(n), 0..24).prop_map(move |instructions| {
            let mut cs = Changeset::new();
            for s in &strings {
                cs.intern(s);
            }
            for i in instructions {
                cs.push(i);
            }
            cs
        })
    })
}

/// Decodes `bytes`; if accepted, checks that re-encoding is a fixed point.
fn decode_never_panics_and_accepted_input_is_stable(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(cs) = Changeset::decode(bytes) {
        let encoded = cs.encode();
        let again = Changeset::decode(&encoded)
            .map_err(|e| TestCaseError::fail(format!("re-encoded bytes refused: {e}")))?;
        if !cs.is_empty() {
            prop_assert_eq!(&again, &cs);
        }
        prop_assert_eq!(again.encode(), encoded);
    }
    Ok(())
}

/// Streams `bytes` and checks the outcome against `Changeset::decode`: the same instructions
/// with the same strings, or the same error (offset, expectation, kind).
fn stream_matches_decode(bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut stream = Changeset::stream(bytes);
    let mut streamed = Vec::new();
    let outcome = loop {
        match stream.next_instruction() {
            Ok(Some(instruction)) => streamed.push(instruction),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    match (Changeset::decode(bytes), outcome) {
        (Ok(decoded), Ok(())) => {
            prop_assert_eq!(&streamed, &decoded.instructions);
            prop_assert_eq!(stream.strings().string_count(), decoded.string_count());
            for i in 0..decoded.string_count() {
                prop_assert_eq!(
                    stream.strings().string(InternString(i)),
                    decoded.string(InternString(i))
                );
            }
            // Once at its end, the stream stays there.
            prop_assert!(stream.next_instruction().unwrap().is_none());
        }
        (Err(a), Err(b)) => {
            prop_assert_eq!(a.to_string(), b.to_string());
            // The instruction that failed half-read is not left behind.
            prop_assert!(stream.strings().instructions.is_empty());
            prop_assert!(stream.next_instruction().unwrap().is_none());
        }
        (a, b) => prop_assert!(false, "decode {:?}, stream {:?}", a.map(|_| ()), b),
    }
    Ok(())
}

/// Decodes `bytes` beside `earlier`'s table and checks the outcome against
/// `Changeset::decode`: the same changeset (strings included), or the same error.
fn sharing_matches_decode(bytes: &[u8], earlier: &Changeset) -> Result<(), TestCaseError> {
    match (
        Changeset::decode(bytes),
        Changeset::decode_sharing(bytes, Some(earlier)),
    ) {
        (Ok(plain), Ok(shared)) => {
            prop_assert_eq!(&shared, &plain);
            prop_assert_eq!(shared.strings(), plain.strings());
            prop_assert_eq!(shared.encode(), plain.encode());
            // Shared exactly when the tables are equal.
            prop_assert_eq!(
                shared.shares_strings_with(earlier),
                shared.strings() == earlier.strings()
            );
        }
        (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
        (a, b) => prop_assert!(
            false,
            "decode {:?}, sharing {:?}",
            a.map(|_| ()),
            b.map(|_| ())
        ),
    }
    Ok(())
}

/// A changeset whose table is `cs`'s changed by `how`: the same, a prefix, one more string,
/// its first string renamed, its first two swapped, or empty.
fn earlier_table(cs: &Changeset, how: u8) -> Changeset {
    let strings = cs.strings();
    let mut out = Changeset::new();
    let names: Vec<String> = match how % 6 {
        0 => strings.to_vec(),
        1 => strings[..strings.len() / 2].to_vec(),
        2 => strings
            .iter()
            .cloned()
            .chain(["zz-extra".to_owned()])
            .collect(),
        3 => strings
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if i == 0 {
                    format!("{s}-renamed")
                } else {
                    s.clone()
                }
            })
            .collect(),
        4 => {
            let mut swapped = strings.to_vec();
            if swapped.len() >= 2 {
                swapped.swap(0, 1);
            }
            swapped
        }
        _ => Vec::new(),
    };
    for name in &names {
        out.intern(name);
    }
    out
}

/// A string defined twice is refused beside an earlier table holding it as well: strings match
/// an earlier table by index, not by being in it.
#[test]
fn a_repeated_string_is_refused_beside_an_earlier_table() {
    let mut earlier = Changeset::new();
    earlier.intern("A");
    earlier.intern("B");
    // INTERN_STRING (0x3F) 0 "A", then INTERN_STRING 1 "A".
    let bytes = [0x3F, 0, 1, b'A', 0x3F, 1, 1, b'A'];
    let plain = Changeset::decode(&bytes).unwrap_err();
    let shared = Changeset::decode_sharing(&bytes, Some(&earlier)).unwrap_err();
    assert_eq!(shared.to_string(), plain.to_string());
    assert!(plain.to_string().contains("A"), "{plain}");
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    match *m {
        Mutation::Flip(at, mask) if len > 0 => bytes[at % len] ^= mask | 1,
        Mutation::Insert(at, b) => bytes.insert(at % (len + 1), b),
        Mutation::Remove(at) if len > 0 => {
            bytes.remove(at % len);
        }
        Mutation::Truncate(at) => bytes.truncate(at % (len + 1)),
        _ => {}
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Flip(a, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Insert(a, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn valid_changesets_round_trip(cs in changeset()) {
        let bytes = cs.encode();
        let decoded = Changeset::decode(&bytes)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{cs}")))?;
        if cs.is_empty() {
            prop_assert!(bytes.is_empty());
            prop_assert!(decoded.is_empty());
        } else {
            prop_assert_eq!(&decoded, &cs);
        }
        prop_assert_eq!(decoded.encode(), bytes);
        // The readable form resolves every index without panicking.
        prop_assert_eq!(decoded.to_string().lines().count(), cs.len());
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        decode_never_panics_and_accepted_input_is_stable(&bytes)?;
        stream_matches_decode(&bytes)?;
    }

    #[test]
    fn the_encoder_writes_what_encode_writes(cs in changeset()) {
        let mut encoder = Encoder::new();
        for s in cs.strings() {
            encoder.intern(s);
        }
        for instruction in &cs.instructions {
            encoder.push(instruction.clone());
        }
        prop_assert_eq!(encoder.len(), cs.len());
        prop_assert_eq!(encoder.finish(), cs.encode());
    }

    #[test]
    fn streamed_changesets_are_the_decoded_ones(
        cs in changeset(),
        mutations in prop::collection::vec(mutation(), 0..3),
    ) {
        let mut bytes = cs.encode();
        stream_matches_decode(&bytes)?;
        for m in &mutations {
            apply(&mut bytes, m);
        }
        stream_matches_decode(&bytes)?;
    }

    #[test]
    fn decoding_beside_an_earlier_table_is_decoding(
        cs in changeset(),
        how in any::<u8>(),
        mutations in prop::collection::vec(mutation(), 0..3),
    ) {
        let earlier = earlier_table(&cs, how);
        let mut bytes = cs.encode();
        sharing_matches_decode(&bytes, &earlier)?;
        for m in &mutations {
            apply(&mut bytes, m);
        }
        sharing_matches_decode(&bytes, &earlier)?;
    }

    #[test]
    fn mutated_encodings_never_panic(
        cs in changeset(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = cs.encode();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        decode_never_panics_and_accepted_input_is_stable(&bytes)?;
    }
}
