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

proptest! {
    #[test]
    fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = ClientMessage::parse(&bytes, &limits());
        let _ = ServerMessage::parse(&bytes, &limits());
    }

    #[test]
    fn uploads_round_trip(
        entries in prop::collection::vec(
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), prop::collection::vec(any::<u8>(), 0..300)),
            0..6,
        ),
        session in any::<u64>(),
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
        };
        let bytes = message.encode();
        let cut = cut.min(bytes.len().saturating_sub(1));
        prop_assert!(ServerMessage::parse(&bytes[..cut], &limits()).is_err());
    }
}
