//! Sync message codec: realm-core's codec test strings byte for byte, round trips of every
//! message, version negotiation, and hostile input mapped to the right error codes.

use proptest::prelude::*;
use tandem::protocol::*;

fn limits() -> Limits {
    Limits::default()
}

#[test]
fn realm_core_client_vectors() {
    // test/test_sync_protocol_codec.cpp, realm-core v14.
    let cases: Vec<(ClientMessage, &[u8])> = vec![
        (
            ClientMessage::Bind {
                session: 888234,
                path: String::new(),
                token: "token".into(),
                need_client_file_ident: true,
                is_subserver: false,
            },
            b"bind 888234 0 5 1 0\ntoken",
        ),
        (
            ClientMessage::Bind {
                session: 999123,
                path: "server/path".into(),
                token: "token_string".into(),
                need_client_file_ident: false,
                is_subserver: true,
            },
            b"bind 999123 11 12 0 1\nserver/pathtoken_string",
        ),
        (
            ClientMessage::Ident {
                session: 234888,
                client_file_ident: 999123,
                client_file_ident_salt: 123999,
                download_server_version: 3,
                download_client_version: 4,
                latest_server_version: 1,
                latest_server_version_salt: 2,
                query: None,
            },
            b"ident 234888 999123 123999 3 4 1 2\n",
        ),
        (
            ClientMessage::JsonError {
                code: 9099,
                session: 234888,
                json: "{\"valA\":123,\"valB\":\"something\"}".into(),
            },
            b"json_error 9099 31 234888\n{\"valA\":123,\"valB\":\"something\"}",
        ),
        (
            ClientMessage::Upload {
                session: 999123,
                progress_client_version: 30,
                progress_server_version: 17,
                locked_server_version: 10,
                entries: vec![
                    UploadEntry {
                        client_version: 29,
                        last_integrated_server_version: 18,
                        origin_timestamp: 259604001718,
                        origin_file_ident: 888123,
                        changeset: b"AABBCCDDEEFFGGHHIIJJKKLLMMNNOOPP".to_vec(),
                    },
                    UploadEntry {
                        client_version: 30,
                        last_integrated_server_version: 19,
                        origin_timestamp: 259604001850,
                        origin_file_ident: 888234,
                        changeset: b"EEFFGGHHIIJJKKLLMMNNOOPPQQRRSSTT".to_vec(),
                    },
                ],
            },
            b"upload 999123 0 122 0 30 17 10\n29 18 259604001718 888123 32 AABBCCDDEEFFGGHHIIJJKKLLMMNNOOPP30 19 259604001850 888234 32 EEFFGGHHIIJJKKLLMMNNOOPPQQRRSSTT",
        ),
        (ClientMessage::Unbind { session: 234888 }, b"unbind 234888\n"),
        (
            ClientMessage::Mark {
                session: 234888,
                request_ident: 888234,
            },
            b"mark 234888 888234\n",
        ),
        (
            ClientMessage::Ping {
                timestamp: 1234567890,
                rtt: 23,
            },
            b"ping 1234567890 23\n",
        ),
    ];
    for (message, bytes) in cases {
        assert_eq!(message.encode(), bytes, "{message:?}");
        assert_eq!(ClientMessage::parse(bytes, &limits()).unwrap(), message);
    }
}

#[test]
fn server_messages_follow_the_reference_field_order() {
    let cases: Vec<(ServerMessage, &[u8])> = vec![
        (
            ServerMessage::Ident {
                session: 1,
                client_file_ident: 2,
                client_file_ident_salt: 3,
            },
            b"ident 1 2 3\n",
        ),
        (
            ServerMessage::Download {
                session: 7,
                download_server_version: 5,
                download_client_version: 4,
                latest_server_version: 6,
                latest_server_version_salt: 99,
                upload_client_version: 3,
                upload_server_version: 2,
                downloadable_bytes: 0,
                entries: vec![DownloadEntry {
                    server_version: 5,
                    last_integrated_client_version: 4,
                    origin_timestamp: 1000,
                    origin_file_ident: 12,
                    original_changeset_size: 3,
                    changeset: b"abc".to_vec(),
                }],
                flx: None,
            },
            b"download 7 5 4 6 99 3 2 0 0 19 0\n5 4 1000 12 3 3 abc",
        ),
        (
            ServerMessage::Mark {
                session: 1,
                request_ident: 9,
            },
            b"mark 1 9\n",
        ),
        (ServerMessage::Unbound { session: 1 }, b"unbound 1\n"),
        (
            ServerMessage::Error {
                code: 203,
                message: "bad token".into(),
                try_again: false,
                session: 4,
            },
            b"error 203 9 0 4\nbad token",
        ),
        (
            ServerMessage::Pong {
                timestamp: 1234567890,
            },
            b"pong 1234567890\n",
        ),
    ];
    for (message, bytes) in cases {
        assert_eq!(message.encode(), bytes, "{message:?}");
        assert_eq!(ServerMessage::parse(bytes, &limits()).unwrap(), message);
    }
}

#[test]
fn large_bodies_are_compressed_and_inflated() {
    let entry = |v: u64| UploadEntry {
        client_version: v,
        last_integrated_server_version: 1,
        origin_timestamp: 2,
        origin_file_ident: 0,
        changeset: vec![b'x'; 2000],
    };
    let upload = ClientMessage::Upload {
        session: 1,
        progress_client_version: 2,
        progress_server_version: 1,
        locked_server_version: 0,
        entries: vec![entry(1), entry(2)],
    };
    let bytes = upload.encode();
    assert!(bytes.starts_with(b"upload 1 1 "), "compressed flag set");
    assert!(bytes.len() < 1000);
    assert_eq!(ClientMessage::parse(&bytes, &limits()).unwrap(), upload);
}

fn code_of(bytes: &[u8]) -> ErrorCode {
    ClientMessage::parse(bytes, &limits()).unwrap_err().code
}

#[test]
fn malformed_messages_get_the_right_error_code() {
    assert_eq!(code_of(b"hello 1\n"), ErrorCode::UnknownMessage);
    assert_eq!(
        code_of(b"bind 1 0 5 1 0"),
        ErrorCode::BadSyntax,
        "no newline"
    );
    assert_eq!(
        code_of(b"mark 1  2\n"),
        ErrorCode::BadSyntax,
        "double space"
    );
    assert_eq!(code_of(b"mark 1 -2\n"), ErrorCode::BadSyntax);
    assert_eq!(
        code_of(b"mark 1 02\n"),
        ErrorCode::BadSyntax,
        "leading zero"
    );
    assert_eq!(
        code_of(b"mark 1 99999999999999999999\n"),
        ErrorCode::BadSyntax,
        "overflow"
    );
    assert_eq!(code_of(b"mark 1\n"), ErrorCode::BadSyntax, "missing field");
    assert_eq!(
        code_of(b"mark 1 2\nextra"),
        ErrorCode::BadSyntax,
        "trailing bytes"
    );
    assert_eq!(
        code_of(b"bind 1 0 5 2 0\ntoken"),
        ErrorCode::BadSyntax,
        "flag of 2"
    );
    assert_eq!(
        code_of(b"bind 1 0 9 1 0\ntoken"),
        ErrorCode::BadSyntax,
        "body too short"
    );
    assert_eq!(
        code_of(b"bind 1 2000 5 1 0\ntoken"),
        ErrorCode::LimitsExceeded,
        "path over 1024"
    );
    assert_eq!(
        code_of(b"bind 1 0 5000 1 0\ntoken"),
        ErrorCode::LimitsExceeded,
        "token over 2048"
    );
    assert_eq!(
        code_of(b"upload 1 0 99999999999 0 0 0 0\n"),
        ErrorCode::LimitsExceeded
    );
    assert_eq!(
        code_of(b"upload 1 0 9 0 0 0 0\n1 2 3"),
        ErrorCode::BadSyntax,
        "declared 9, has 5"
    );
    assert_eq!(
        code_of(b"upload 1 0 9 0 0 0 0\n1 2 3 4 x"),
        ErrorCode::BadChangesetHeaderSyntax
    );
    assert_eq!(
        code_of(b"upload 1 0 12 0 0 0 0\n1 2 3 4 9 ab"),
        ErrorCode::BadChangesetSize
    );
    assert_eq!(
        code_of(b"upload 1 1 100 5 0 0 0\nnotzl"),
        ErrorCode::BadDecompression
    );
    // A decompression bomb: 16 MiB + 1 declared is refused by the limit before inflating, and a
    // small declaration of a big stream stops at the declared size.
    let zeros = tandem::changeset::compression::compress(&vec![0u8; 1 << 20]);
    let mut bomb = format!(
        "upload 1 1 {} {} 0 0 0\n",
        16 * 1024 * 1024 + 1,
        zeros.len()
    )
    .into_bytes();
    bomb.extend_from_slice(&zeros);
    assert_eq!(code_of(&bomb), ErrorCode::LimitsExceeded);
    let mut lie = format!("upload 1 1 100 {} 0 0 0\n", zeros.len()).into_bytes();
    lie.extend_from_slice(&zeros);
    assert_eq!(code_of(&lie), ErrorCode::BadDecompression);
    assert_eq!(
        code_of(&[0xff; 600]),
        ErrorCode::BadSyntax,
        "no header line in 512 bytes"
    );
}

#[test]
fn tandem_messages_have_the_documented_bytes() {
    let client: Vec<(ClientMessage, &[u8])> = vec![
        (
            ClientMessage::Refresh {
                session: 3,
                token: "hello".into(),
            },
            b"refresh 3 5\nhello",
        ),
        (
            ClientMessage::StateRequest {
                session: 1,
                server_version: 0,
                offset: 0,
            },
            b"state_request 1 0 0\n",
        ),
        (
            ClientMessage::StateRequest {
                session: 1,
                server_version: 17,
                offset: 4096,
            },
            b"state_request 1 17 4096\n",
        ),
        (
            ClientMessage::ClientVersionRequest {
                session: 2,
                client_file_ident: 888123,
                client_file_ident_salt: 123999,
            },
            b"client_version_request 2 888123 123999\n",
        ),
        (
            ClientMessage::Transact {
                session: 4,
                request_ident: 9,
                client_version: 30,
                last_integrated_server_version: 17,
                origin_timestamp: 259604001718,
                changeset: b"AABB".to_vec(),
            },
            b"transact 4 9 30 17 259604001718 0 4 0\nAABB",
        ),
    ];
    for (message, bytes) in client {
        assert_eq!(message.encode(), bytes, "{message:?}");
        assert_eq!(ClientMessage::parse(bytes, &limits()).unwrap(), message);
    }
    let server: Vec<(ServerMessage, &[u8])> = vec![
        (
            ServerMessage::State {
                session: 1,
                server_version: 17,
                server_version_salt: 99,
                begin_offset: 4,
                end_offset: 7,
                total_size: 10,
                segment: b"abc".to_vec(),
            },
            b"state 1 17 99 4 7 10 0 3 0\nabc",
        ),
        (
            ServerMessage::State {
                session: 1,
                server_version: 17,
                server_version_salt: 99,
                begin_offset: 0,
                end_offset: 0,
                total_size: 0,
                segment: Vec::new(),
            },
            b"state 1 17 99 0 0 0 0 0 0\n",
        ),
        (
            ServerMessage::ClientVersion {
                session: 7,
                client_version: 42,
            },
            b"client_version 7 42\n",
        ),
        (
            ServerMessage::TransactResult {
                session: 4,
                request_ident: 9,
                accepted: true,
                server_version: 18,
                reason: String::new(),
            },
            b"transact_result 4 9 1 18 0\n",
        ),
        (
            ServerMessage::TransactResult {
                session: 4,
                request_ident: 10,
                accepted: false,
                server_version: 0,
                reason: "conflict".into(),
            },
            b"transact_result 4 10 0 0 8\nconflict",
        ),
    ];
    for (message, bytes) in server {
        assert_eq!(message.encode(), bytes, "{message:?}");
        assert_eq!(ServerMessage::parse(bytes, &limits()).unwrap(), message);
    }
}

#[test]
fn transact_and_state_bodies_round_trip_compressed_and_not() {
    let transact = |changeset: Vec<u8>| ClientMessage::Transact {
        session: 1,
        request_ident: 2,
        client_version: 3,
        last_integrated_server_version: 4,
        origin_timestamp: 5,
        changeset,
    };
    let state = |segment: Vec<u8>| ServerMessage::State {
        session: 1,
        server_version: 8,
        server_version_salt: 9,
        begin_offset: 100,
        end_offset: 100 + segment.len() as u64,
        total_size: 10_000,
        segment,
    };
    // Exactly 1 KiB is never compressed; above it, a compressible body is.
    let plain = transact(vec![b'x'; 1024]);
    let bytes = plain.encode();
    assert!(bytes.starts_with(b"transact 1 2 3 4 5 0 1024 0\n"));
    assert_eq!(ClientMessage::parse(&bytes, &limits()).unwrap(), plain);
    let big = transact(vec![b'x'; 5000]);
    let bytes = big.encode();
    assert!(
        bytes.starts_with(b"transact 1 2 3 4 5 1 5000 "),
        "compressed flag set"
    );
    assert!(bytes.len() < 1000);
    assert_eq!(ClientMessage::parse(&bytes, &limits()).unwrap(), big);

    let plain = state(b"small segment".to_vec());
    let bytes = plain.encode();
    assert!(bytes.starts_with(b"state 1 8 9 100 113 10000 0 13 0\n"));
    assert_eq!(ServerMessage::parse(&bytes, &limits()).unwrap(), plain);
    let big = state(b"segment ".repeat(600));
    let bytes = big.encode();
    assert!(
        bytes.starts_with(b"state 1 8 9 100 4900 10000 1 4800 "),
        "compressed flag set"
    );
    assert!(bytes.len() < 1000);
    assert_eq!(ServerMessage::parse(&bytes, &limits()).unwrap(), big);
}

fn server_code_of(bytes: &[u8]) -> ErrorCode {
    ServerMessage::parse(bytes, &limits()).unwrap_err().code
}

#[test]
fn malformed_tandem_messages_get_the_right_error_code() {
    // Truncated bodies.
    assert_eq!(code_of(b"refresh 3 5\nhell"), ErrorCode::BadSyntax);
    assert_eq!(
        code_of(b"transact 4 9 30 17 1 0 4 0\nAAB"),
        ErrorCode::BadSyntax
    );
    assert_eq!(
        server_code_of(b"state 1 17 99 4 7 10 0 3 0\nab"),
        ErrorCode::BadSyntax
    );
    assert_eq!(
        server_code_of(b"transact_result 4 10 0 0 8\nconflic"),
        ErrorCode::BadSyntax
    );
    // Trailing bytes.
    assert_eq!(code_of(b"refresh 3 5\nhello!"), ErrorCode::BadSyntax);
    assert_eq!(code_of(b"state_request 1 0 0\nx"), ErrorCode::BadSyntax);
    assert_eq!(
        code_of(b"client_version_request 2 3 4\nx"),
        ErrorCode::BadSyntax
    );
    assert_eq!(
        code_of(b"transact 4 9 30 17 1 0 4 0\nAABBC"),
        ErrorCode::BadSyntax
    );
    assert_eq!(
        server_code_of(b"state 1 17 99 4 7 10 0 3 0\nabcd"),
        ErrorCode::BadSyntax
    );
    assert_eq!(
        server_code_of(b"client_version 7 42\n "),
        ErrorCode::BadSyntax
    );
    assert_eq!(
        server_code_of(b"transact_result 4 9 1 18 0\nx"),
        ErrorCode::BadSyntax
    );
    // Wrong field counts and flags.
    assert_eq!(code_of(b"state_request 1 0\n"), ErrorCode::BadSyntax);
    assert_eq!(
        code_of(b"client_version_request 2 3 4 5\n"),
        ErrorCode::BadSyntax
    );
    assert_eq!(
        code_of(b"transact 4 9 30 17 1 2 4 0\nAABB"),
        ErrorCode::BadSyntax
    );
    assert_eq!(
        server_code_of(b"transact_result 4 9 2 18 0\n"),
        ErrorCode::BadSyntax
    );
    // Each direction's messages are unknown to the other side's parser.
    assert_eq!(code_of(b"client_version 7 42\n"), ErrorCode::UnknownMessage);
    assert_eq!(
        server_code_of(b"state_request 1 0 0\n"),
        ErrorCode::UnknownMessage
    );
    // A token over the limit.
    assert_eq!(code_of(b"refresh 3 2049\nhello"), ErrorCode::LimitsExceeded);
    let mut long = b"refresh 3 2049\n".to_vec();
    long.extend_from_slice(&[b'a'; 2049]);
    assert_eq!(code_of(&long), ErrorCode::LimitsExceeded);
    let mut at_limit = b"refresh 3 2048\n".to_vec();
    at_limit.extend_from_slice(&[b'a'; 2048]);
    assert!(ClientMessage::parse(&at_limit, &limits()).is_ok());
    // State segments that do not match their offsets.
    assert_eq!(
        server_code_of(b"state 1 17 99 4 8 10 0 3 0\nabc"),
        ErrorCode::BadSyntax,
        "segment of 3 bytes for [4, 8)"
    );
    assert_eq!(
        server_code_of(b"state 1 17 99 4 6 10 0 3 0\nabc"),
        ErrorCode::BadSyntax,
        "segment of 3 bytes for [4, 6)"
    );
    assert_eq!(
        server_code_of(b"state 1 17 99 8 11 10 0 3 0\nabc"),
        ErrorCode::BadSyntax,
        "end_offset > total_size"
    );
    assert_eq!(
        server_code_of(b"state 1 17 99 7 4 10 0 0 0\n"),
        ErrorCode::BadSyntax,
        "begin_offset > end_offset"
    );
    // Text that is not UTF-8.
    assert_eq!(code_of(b"refresh 3 2\n\xff\xfe"), ErrorCode::BadSyntax);
    assert_eq!(
        server_code_of(b"transact_result 4 10 0 0 2\n\xc3\x28"),
        ErrorCode::BadSyntax
    );
    // A reason over the body limit.
    assert_eq!(
        server_code_of(b"transact_result 4 10 0 0 99999999999\n"),
        ErrorCode::LimitsExceeded
    );
    // Bad compression.
    assert_eq!(
        code_of(b"transact 4 9 30 17 1 1 100 5\nnotzl"),
        ErrorCode::BadDecompression
    );
    assert_eq!(
        server_code_of(b"state 1 17 99 0 100 100 1 100 5\nnotzl"),
        ErrorCode::BadDecompression
    );
    // Decompression bombs: a declared size over the limit is refused before inflating; a small
    // declaration of a big stream stops at the declared size.
    let zeros = tandem::changeset::compression::compress(&vec![0u8; 1 << 20]);
    let over = 16 * 1024 * 1024 + 1;
    let mut bomb = format!("transact 4 9 30 17 1 1 {over} {}\n", zeros.len()).into_bytes();
    bomb.extend_from_slice(&zeros);
    assert_eq!(code_of(&bomb), ErrorCode::LimitsExceeded);
    let mut bomb = format!("state 1 17 99 0 {over} {over} 1 {over} {}\n", zeros.len()).into_bytes();
    bomb.extend_from_slice(&zeros);
    assert_eq!(server_code_of(&bomb), ErrorCode::LimitsExceeded);
    let mut lie = format!("transact 4 9 30 17 1 1 100 {}\n", zeros.len()).into_bytes();
    lie.extend_from_slice(&zeros);
    assert_eq!(code_of(&lie), ErrorCode::BadDecompression);
    let mut lie = format!("state 1 17 99 0 100 100 1 100 {}\n", zeros.len()).into_bytes();
    lie.extend_from_slice(&zeros);
    assert_eq!(server_code_of(&lie), ErrorCode::BadDecompression);
}

#[test]
fn version_negotiation_picks_the_highest_shared_version() {
    assert_eq!(
        client_offer(),
        format!("{PROTOCOL_PREFIX}{CURRENT_VERSION}")
    );
    assert_eq!(negotiate(&client_offer()), Ok(CURRENT_VERSION));
    let mixed = format!("com.mongodb.realm-sync#14, {PROTOCOL_PREFIX}99, {PROTOCOL_PREFIX}1");
    assert_eq!(negotiate(&mixed), Ok(1));
    assert_eq!(
        negotiate("com.mongodb.realm-sync#14").unwrap_err().code,
        ErrorCode::WrongProtocolVersion
    );
    assert_eq!(accepted(&format!("{PROTOCOL_PREFIX}1")), Ok(1));
    assert!(accepted(&format!("{PROTOCOL_PREFIX}7")).is_err());
    assert!(accepted("com.mongodb.realm-sync#14").is_err());
}

#[test]
fn error_code_classes() {
    assert!(ErrorCode::BadSyntax.is_connection_level());
    assert!(!ErrorCode::BadAuthentication.is_connection_level());
    for code in [208, 209, 210, 211, 217, 222] {
        assert!(
            ErrorCode::from_code(code).unwrap().requires_client_reset(),
            "{code}"
        );
    }
    assert!(!ErrorCode::TokenExpired.requires_client_reset());
    assert_eq!(
        ErrorCode::from_code(213),
        None,
        "213 is not in realm-core's enum"
    );
}

/// A value a client may send in any decimal field (at most 2^63 - 1; larger ones are refused,
/// tests/server_limits.rs).
fn field() -> impl Strategy<Value = u64> {
    0..=tandem::protocol::limits::MAX_FIELD_VALUE
}

proptest! {
    #[test]
    fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = ClientMessage::parse(&bytes, &limits());
        let _ = ServerMessage::parse(&bytes, &limits());
    }

    #[test]
    fn uploads_round_trip(
        entries in prop::collection::vec(
            (field(), field(), field(), field(), prop::collection::vec(any::<u8>(), 0..300)),
            0..6,
        ),
        session in field(),
    ) {
        let message = ClientMessage::Upload {
            session,
            progress_client_version: 1,
            progress_server_version: 2,
            locked_server_version: 3,
            entries: entries
                .into_iter()
                .map(|(a, b, c, d, changeset)| UploadEntry {
                    client_version: a,
                    last_integrated_server_version: b,
                    origin_timestamp: c,
                    origin_file_ident: d,
                    changeset,
                })
                .collect(),
        };
        prop_assert_eq!(ClientMessage::parse(&message.encode(), &limits()).unwrap(), message);
    }

    #[test]
    fn tandem_messages_round_trip(
        a in field(),
        b in field(),
        c in field(),
        flag in any::<bool>(),
        text in "\\PC{0,40}",
        bytes in prop::collection::vec(any::<u8>(), 0..3000),
        repeat in 0usize..3000,
    ) {
        // Random bytes rarely compress; repeated ones over 1 KiB always do.
        for body in [bytes.clone(), vec![7u8; repeat]] {
            let client = [
                ClientMessage::Refresh { session: a, token: text.clone() },
                ClientMessage::StateRequest { session: a, server_version: b, offset: c },
                ClientMessage::ClientVersionRequest {
                    session: a,
                    client_file_ident: b,
                    client_file_ident_salt: c,
                },
                ClientMessage::Transact {
                    session: a,
                    request_ident: b,
                    client_version: c,
                    last_integrated_server_version: b,
                    origin_timestamp: a,
                    changeset: body.clone(),
                },
            ];
            for message in client {
                prop_assert_eq!(ClientMessage::parse(&message.encode(), &limits()).unwrap(), message);
            }
            let begin = a % (1 << 40);
            let end = begin + body.len() as u64;
            let server = [
                ServerMessage::State {
                    session: a,
                    server_version: b,
                    server_version_salt: c,
                    begin_offset: begin,
                    end_offset: end,
                    total_size: end + c % 1000,
                    segment: body.clone(),
                },
                ServerMessage::ClientVersion { session: a, client_version: b },
                ServerMessage::TransactResult {
                    session: a,
                    request_ident: b,
                    accepted: flag,
                    server_version: c,
                    reason: if flag { String::new() } else { text.clone() },
                },
            ];
            for message in server {
                prop_assert_eq!(ServerMessage::parse(&message.encode(), &limits()).unwrap(), message);
            }
        }
    }

    #[test]
    fn truncated_messages_are_errors_not_panics(cut in 0usize..200) {
        let message = ServerMessage::Download {
            session: 7,
            download_server_version: 5,
            download_client_version: 4,
            latest_server_version: 6,
            latest_server_version_salt: 99,
            upload_client_version: 3,
            upload_server_version: 2,
            downloadable_bytes: 0,
            entries: vec![DownloadEntry {
                server_version: 5,
                last_integrated_client_version: 4,
                origin_timestamp: 1000,
                origin_file_ident: 12,
                original_changeset_size: 40,
                changeset: vec![7; 40],
            }],
            flx: None,
        };
        let bytes = message.encode();
        let cut = cut.min(bytes.len().saturating_sub(1));
        prop_assert!(ServerMessage::parse(&bytes[..cut], &limits()).is_err());
    }
}

#[test]
fn flexible_sync_messages_have_realm_cores_fields() {
    // realm-wire-compat.md section 4 and the transcript of realm-client-spike.md section 5.
    let ident = ClientMessage::parse(b"ident 1 2 77 0 0 0 0 0 2\n{}", &limits()).unwrap();
    assert_eq!(
        ident,
        ClientMessage::Ident {
            session: 1,
            client_file_ident: 2,
            client_file_ident_salt: 77,
            download_server_version: 0,
            download_client_version: 0,
            latest_server_version: 0,
            latest_server_version_salt: 0,
            query: Some(FlxQuery {
                version: 0,
                body: "{}".into()
            }),
        }
    );
    assert_eq!(ident.encode(), b"ident 1 2 77 0 0 0 0 0 2\n{}");
    let body = r#"{"Task":"(done == false )"}"#;
    let query =
        ClientMessage::parse(format!("query 1 1 27\n{body}").as_bytes(), &limits()).unwrap();
    assert_eq!(
        query,
        ClientMessage::Query {
            session: 1,
            query: FlxQuery {
                version: 1,
                body: body.into()
            }
        }
    );
    assert_eq!(query.encode(), format!("query 1 1 27\n{body}").into_bytes());
    assert_eq!(
        ClientMessage::peek_session(b"query 9 1 2\n{}"),
        Some(("query", 9))
    );

    // DOWNLOAD: query version, batch state and a decimal estimate in place of downloadable
    // bytes.
    let download = ServerMessage::Download {
        session: 1,
        download_server_version: 2,
        download_client_version: 6,
        latest_server_version: 2,
        latest_server_version_salt: 55,
        upload_client_version: 6,
        upload_server_version: 0,
        downloadable_bytes: 0,
        flx: Some(FlxDownload {
            query_version: 1,
            batch_state: BatchState::LastInBatch,
            progress_estimate: 0.5,
        }),
        entries: Vec::new(),
    };
    assert_eq!(
        download.encode(),
        b"download 1 2 6 2 55 6 0 1 1 0.5 0 0 0\n"
    );
    assert_eq!(
        ServerMessage::parse(&download.encode(), &limits()).unwrap(),
        download
    );
    for (estimate, text) in [(1.0, "1"), (f64::NAN, "1"), (7.0, "1"), (-1.0, "0")] {
        let mut m = download.clone();
        if let ServerMessage::Download { flx: Some(f), .. } = &mut m {
            f.progress_estimate = estimate;
        }
        let expected = format!("download 1 2 6 2 55 6 0 1 1 {text} 0 0 0\n");
        assert_eq!(m.encode(), expected.as_bytes(), "{estimate}");
    }
    for bad in [
        &b"download 1 2 6 2 55 6 0 1 3 1 0 0 0\n"[..],
        b"download 1 2 6 2 55 6 0 1 1 1.5 0 0 0\n",
        b"download 1 2 6 2 55 6 0 1 1 nan 0 0 0\n",
        b"download 1 2 6 2 55 6 0 1 1 x 0 0 0\n",
    ] {
        assert_eq!(server_code_of(bad), ErrorCode::BadSyntax, "{bad:?}");
    }
    let error = ServerMessage::QueryError {
        code: 226,
        session: 3,
        query_version: 4,
        message: "no".into(),
    };
    assert_eq!(error.encode(), b"query_error 226 2 3 4\nno");
    assert_eq!(
        ServerMessage::parse(&error.encode(), &limits()).unwrap(),
        error
    );
}
