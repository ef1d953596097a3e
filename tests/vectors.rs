//! Golden vectors: byte strings in `tests/vectors/`, each decoded, checked against its expected
//! meaning, and re-encoded byte for byte (or, for `reject.txt`, refused with the expected error).

use std::fs;
use std::path::Path;

use tandem::changeset::varint;
use tandem::changeset::Changeset;

/// One vector: its name, bytes, and the `>` (expected rendering) or `!` (expected error) lines.
struct Vector {
    name: String,
    bytes: Vec<u8>,
    expected: Vec<String>,
}

fn parse_hex(line: &str, file: &str, number: usize) -> Vec<u8> {
    line.split_whitespace()
        .map(|pair| {
            u8::from_str_radix(pair, 16)
                .unwrap_or_else(|_| panic!("{file}:{number}: bad hex byte {pair:?}"))
        })
        .collect()
}

fn load(file: &str, marker: char) -> Vec<Vector> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(file);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut vectors: Vec<Vector> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix("== ") {
            vectors.push(Vector {
                name: name.trim().to_string(),
                bytes: Vec::new(),
                expected: Vec::new(),
            });
            continue;
        }
        let current = vectors
            .last_mut()
            .unwrap_or_else(|| panic!("{file}:{number}: line before the first '== name'"));
        if let Some(rest) = line.strip_prefix(marker) {
            current.expected.push(rest.trim().to_string());
        } else {
            let hex = line.split(';').next().unwrap_or("");
            current.bytes.extend(parse_hex(hex, file, number));
        }
    }
    assert!(!vectors.is_empty(), "{file} holds no vectors");
    vectors
}

#[test]
fn varint_vectors_decode_and_re_encode() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/varint.txt");
    let text = fs::read_to_string(path).unwrap();
    let mut count = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (hex, value) = line.split_once(';').expect("line has '; value'");
        let bytes = parse_hex(hex, "varint.txt", 0);
        let value: i64 = value.trim().parse().expect("value is an i64");
        assert_eq!(
            varint::read_i64(&bytes),
            Ok((value, bytes.len())),
            "decoding {hex}"
        );
        let mut out = Vec::new();
        varint::write_i64(&mut out, value);
        assert_eq!(out, bytes, "encoding {value}");
        count += 1;
    }
    assert!(
        count >= 8,
        "expected at least the reference's eight examples"
    );
}

#[test]
fn changeset_vectors_decode_render_and_re_encode() {
    let vectors = load("changesets.txt", '>');
    for v in &vectors {
        let changeset = Changeset::decode(&v.bytes)
            .unwrap_or_else(|e| panic!("vector {}: decode failed: {e}", v.name));
        let rendered: Vec<String> = changeset.to_string().lines().map(str::to_string).collect();
        assert_eq!(rendered, v.expected, "vector {}: readable form", v.name);
        assert_eq!(
            changeset.encode(),
            v.bytes,
            "vector {}: re-encoding",
            v.name
        );
    }
}

#[test]
fn every_instruction_and_payload_type_has_a_vector() {
    use std::collections::BTreeSet;
    use tandem::changeset::{Instruction, Payload, PayloadType};

    let mut opcodes = BTreeSet::new();
    let mut payload_types = BTreeSet::new();
    for v in load("changesets.txt", '>') {
        let changeset = Changeset::decode(&v.bytes).unwrap();
        for instruction in &changeset.instructions {
            opcodes.insert(instruction.opcode());
            let value: Option<&Payload> = match instruction {
                Instruction::Update(u) => Some(&u.value),
                Instruction::ArrayInsert(a) => Some(&a.value),
                Instruction::SetInsert(s) | Instruction::SetErase(s) => Some(&s.value),
                _ => None,
            };
            if let Some(p) = value {
                payload_types.insert(p.payload_type().code());
            }
        }
    }
    assert_eq!(opcodes, (0x00..=0x0D).collect::<BTreeSet<u64>>());
    let all: BTreeSet<i64> = PayloadType::ALL.iter().map(|t| t.code()).collect();
    assert_eq!(payload_types, all);
}

#[test]
fn reject_vectors_fail_with_the_expected_error() {
    let vectors = load("reject.txt", '!');
    for v in &vectors {
        assert!(
            !v.expected.is_empty(),
            "vector {} names no expected error",
            v.name
        );
        match Changeset::decode(&v.bytes) {
            Ok(c) => panic!("vector {}: decoded to\n{c}", v.name),
            Err(e) => {
                let message = e.to_string();
                for piece in &v.expected {
                    assert!(
                        message.contains(piece.as_str()),
                        "vector {}: error {message:?} does not contain {piece:?}",
                        v.name
                    );
                }
            }
        }
    }
}
