//! The server core driven through encoded protocol messages: clients on in-memory replicas
//! upload and download through a `ServerFile`, the server is restarted mid-sync, uploads are
//! resent, and bad input is refused without touching anyone's data.
#![cfg(feature = "server")]

mod harness;

use harness::server_client::Client;
use harness::{Entropy, SeededRng};
use tandem::changeset::{Changeset, InternString};
use tandem::protocol::{ErrorCode, UploadEntry};
use tandem::server::{DownloadPoint, ServerFile};

/// A scratch directory (removed when the returned guard is dropped) and a path in it.
fn temp(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tandem-server-{name}-"))
        .tempdir()
        .unwrap();
    let path = dir.path().join("server.sqlite");
    (dir, path)
}

#[test]
fn clients_converge_through_the_server_across_restarts() {
    for round in 0..8u64 {
        let (_dir, path) = temp(&format!("converge-{round}"));
        let mut server = ServerFile::open(&path).unwrap();
        let mut clients: Vec<Client> = (0..3).map(|_| Client::new(&mut server)).collect();
        let mut rng = SeededRng::new(round + 100);
        for step in 0..300 {
            let c = rng.below(3) as usize;
            match rng.below(4) {
                0 | 1 => clients[c].modify(&mut rng),
                2 => clients[c].upload(&mut server).unwrap(),
                _ => clients[c].download(&server),
            }
            if step % 97 == 96 {
                // Restart: everything acknowledged must still be there, and every version keeps
                // its salt (a client's latest version is checked against it at IDENT; the
                // simulation found the latest one read back as the file's salt).
                let latest = server.latest_version();
                let salts: Vec<u64> = (0..=latest)
                    .map(|v| server.version_salt(v).unwrap())
                    .collect();
                let before = (latest, server.state().unwrap());
                drop(server);
                server = ServerFile::open(&path).unwrap();
                assert_eq!((server.latest_version(), server.state().unwrap()), before);
                let after: Vec<u64> = (0..=latest)
                    .map(|v| server.version_salt(v).unwrap())
                    .collect();
                assert_eq!(after, salts, "round {round}: salts after a restart");
                if latest > 1 {
                    assert_ne!(salts[latest as usize], salts[latest as usize - 1]);
                }
            }
        }
        for _ in 0..2 {
            for c in clients.iter_mut() {
                c.upload(&mut server).unwrap();
            }
            for c in clients.iter_mut() {
                c.download(&server);
            }
        }
        for c in &clients {
            assert_eq!(
                c.state,
                server.state().unwrap(),
                "round {round}: client {} diverged",
                c.ident
            );
            assert_eq!(c.acked, c.history.len() as u64);
        }
        assert!(server.state().unwrap().object_count() > 0);
    }
}

#[test]
fn resent_uploads_are_integrated_once() {
    let (_dir, path) = temp("resend");
    let mut server = ServerFile::open(path).unwrap();
    let mut client = Client::new(&mut server);
    let mut rng = SeededRng::new(5);
    for _ in 0..20 {
        client.modify(&mut rng);
    }
    client.upload(&mut server).unwrap();
    let after_first = server.latest_version();
    client.acked = 0; // the client lost the acknowledgement and sends everything again
    client.upload(&mut server).unwrap();
    assert_eq!(server.latest_version(), after_first, "nothing duplicated");
    assert_eq!(server.state().unwrap(), client.state);
}

#[test]
fn bad_input_is_refused_and_harms_no_one() {
    let (_dir, path) = temp("bad");
    let mut server = ServerFile::open(&path).unwrap();
    let mut good = Client::new(&mut server);
    let mut bad = Client::new(&mut server);
    let mut rng = SeededRng::new(9);
    for _ in 0..10 {
        good.modify(&mut rng);
    }
    good.upload(&mut server).unwrap();
    let before = (server.latest_version(), server.state().unwrap());

    // Garbage instead of a changeset: 212, nothing stored.
    let garbage = [UploadEntry {
        client_version: 1,
        last_integrated_server_version: 0,
        origin_timestamp: 0,
        origin_file_ident: 0,
        changeset: vec![0x3e, 0xff, 0x00],
    }];
    assert_eq!(
        server
            .integrate_upload(bad.ident, &garbage)
            .unwrap_err()
            .code,
        ErrorCode::BadChangeset
    );
    // A changeset that decodes but does not apply (an object of a table nobody created): 212.
    let mut cs = Changeset::new();
    let t = cs.intern("Nope");
    cs.push(tandem::changeset::Instruction::EraseObject {
        table: t,
        object: tandem::changeset::PrimaryKey::Int(1),
    });
    let unappliable = [UploadEntry {
        changeset: cs.encode(),
        ..garbage[0].clone()
    }];
    assert_eq!(
        server
            .integrate_upload(bad.ident, &unappliable)
            .unwrap_err()
            .code,
        ErrorCode::BadChangeset
    );
    // A base version from the future: 209.
    let future = [UploadEntry {
        last_integrated_server_version: 999,
        ..unappliable[0].clone()
    }];
    assert_eq!(
        server
            .integrate_upload(bad.ident, &future)
            .unwrap_err()
            .code,
        ErrorCode::BadServerVersion
    );
    assert_eq!((server.latest_version(), server.state().unwrap()), before);
    // What the server serves (its materialized state) is what its stored history replays to.
    assert_eq!(server.replay().unwrap(), server.state().unwrap());
    assert_eq!(
        ServerFile::open(&path).unwrap().state().unwrap(),
        server.state().unwrap()
    );

    // Unknown client file or wrong salt: 208.
    assert_eq!(
        server.check_ident(12345, 1, Some(0)).unwrap_err().code,
        ErrorCode::BadClientFileIdent
    );
    assert_eq!(
        server
            .check_ident(good.ident, good.salt ^ 1, Some(0))
            .unwrap_err()
            .code,
        ErrorCode::BadClientFileIdent
    );
    assert_eq!(
        server
            .check_ident(good.ident, good.salt, Some(999))
            .unwrap_err()
            .code,
        ErrorCode::BadServerVersion
    );
    assert!(server.check_ident(good.ident, good.salt, Some(0)).is_ok());

    // The good client and a newcomer keep syncing.
    bad.download(&server);
    assert_eq!(bad.state, server.state().unwrap());
    for _ in 0..5 {
        good.modify(&mut rng);
    }
    good.upload(&mut server).unwrap();
    bad.download(&server);
    assert_eq!(bad.state, server.state().unwrap());
}

/// An upload that writes, erases or passes through a dictionary key realm-core refuses ('$'
/// first, '.' anywhere; src/realm/dictionary.cpp) is refused as a bad changeset (212) and
/// integrates nothing, not even its earlier good changesets: a realm-core client that
/// downloaded the key would abort.
/// Adds the embedded table `E` and the table `T` keyed by a required `int` `_id` to `cs`;
/// returns their interned names (T, E).
fn tables_t_and_e(cs: &mut Changeset) -> (InternString, InternString) {
    use tandem::changeset::{AddTable, Instruction, PayloadType, PrimaryKeySpec, TableKind};
    let (t, e, id) = (cs.intern("T"), cs.intern("E"), cs.intern("_id"));
    cs.push(Instruction::AddTable(AddTable {
        table: e,
        kind: TableKind::Embedded,
    }));
    cs.push(Instruction::AddTable(AddTable {
        table: t,
        kind: TableKind::TopLevel(PrimaryKeySpec {
            field: id,
            key_type: PayloadType::Int,
            nullable: false,
        }),
    }));
    (t, e)
}

/// The schema `T(_id int) { n: int }` (and the embedded `E` of [`tables_t_and_e`]).
fn t_with_n() -> Changeset {
    use tandem::changeset::{AddColumn, ColumnCollection, ColumnType, Instruction, PayloadType};
    let mut schema = Changeset::default();
    let (t, _) = tables_t_and_e(&mut schema);
    let n = schema.intern("n");
    schema.push(Instruction::AddColumn(AddColumn {
        table: t,
        field: n,
        column_type: ColumnType::Value(PayloadType::Int),
        nullable: false,
        collection: ColumnCollection::Single,
    }));
    schema
}

/// Upserts `T[id].n = n` ([`t_with_n`]) in `cs`.
fn set(cs: &mut Changeset, id: i64, n: i64) {
    use tandem::changeset::{FieldPath, Instruction, Payload, PrimaryKey, Update};
    let (t, field) = (cs.intern("T"), cs.intern("n"));
    cs.push(Instruction::CreateObject {
        table: t,
        object: PrimaryKey::Int(id),
    });
    cs.push(Instruction::Update(Update {
        path: FieldPath {
            table: t,
            object: PrimaryKey::Int(id),
            field,
            path: Default::default(),
        },
        value: Payload::Int(n),
        is_default: false,
        prior_size: 0,
    }));
}

#[test]
fn dictionary_keys_realm_core_refuses_are_refused_with_the_whole_upload() {
    use tandem::changeset::{
        AddColumn, ColumnCollection, ColumnType, FieldPath, Instruction, PathElement, Payload,
        PayloadType, PrimaryKey, Update,
    };
    let (_dir, path) = temp("dictkeys");
    let mut server = ServerFile::open(&path).unwrap();
    let client = Client::new(&mut server).ident;
    // T(_id int) { sd: dictionary<string>, ed: dictionary<E?>, m: mixed }, E { inner: dictionary<string> }
    let schema = |cs: &mut Changeset| {
        let (t, e) = tables_t_and_e(cs);
        let column = |cs: &mut Changeset, table, name: &str, column_type, nullable| {
            let field = cs.intern(name);
            Instruction::AddColumn(AddColumn {
                table,
                field,
                column_type,
                nullable,
                collection: ColumnCollection::Dictionary {
                    key_type: PayloadType::String,
                },
            })
        };
        let i = column(
            cs,
            e,
            "inner",
            ColumnType::Value(PayloadType::String),
            false,
        );
        cs.push(i);
        let i = column(cs, t, "sd", ColumnType::Value(PayloadType::String), false);
        cs.push(i);
        let i = column(cs, t, "ed", ColumnType::Link { target_table: e }, true);
        cs.push(i);
        cs.push(Instruction::CreateObject {
            table: t,
            object: PrimaryKey::Int(1),
        });
    };
    let update = |cs: &mut Changeset, field: &str, steps: &[&str], value: Payload| {
        let (table, field) = (cs.intern("T"), cs.intern(field));
        let path = steps
            .iter()
            .map(|s| PathElement::Key(cs.intern(s)))
            .collect();
        cs.push(Instruction::Update(Update {
            path: FieldPath {
                table,
                object: PrimaryKey::Int(1),
                field,
                path,
            },
            value,
            is_default: false,
            prior_size: 0,
        }));
    };
    let entry = |version: u64, cs: &Changeset| UploadEntry {
        client_version: version,
        last_integrated_server_version: 0,
        origin_timestamp: 0,
        origin_file_ident: 0,
        changeset: cs.encode(),
    };
    let mut good = Changeset::new();
    schema(&mut good);
    update(&mut good, "sd", &["a$"], Payload::String("ok".into()));
    update(&mut good, "sd", &[""], Payload::String("ok".into()));
    update(&mut good, "ed", &["k"], Payload::ObjectValue);
    let before = (server.latest_version(), server.state().unwrap());

    type Bad = fn(&mut Changeset, &dyn Fn(&mut Changeset, &str, &[&str], Payload));
    let bads: [(&str, Bad); 5] = [
        ("set '.'", |cs, u| {
            u(cs, "sd", &["b.c"], Payload::String("x".into()))
        }),
        ("set '$'", |cs, u| {
            u(cs, "sd", &["$b"], Payload::String("x".into()))
        }),
        ("erase", |cs, u| u(cs, "sd", &["$b"], Payload::Erased)),
        ("embedded value", |cs, u| {
            u(cs, "ed", &["a.b"], Payload::ObjectValue)
        }),
        ("path through a key", |cs, u| {
            u(cs, "ed", &["$k", "inner", "x"], Payload::String("x".into()))
        }),
    ];
    for (what, bad) in bads {
        // In the same changeset as the schema, and as a second changeset of the same upload.
        let mut alone = Changeset::new();
        schema(&mut alone);
        bad(&mut alone, &update);
        let mut second = Changeset::new();
        bad(&mut second, &update);
        let mut nested = Changeset::new();
        update(
            &mut nested,
            "ed",
            &["k", "inner", "."],
            Payload::String("x".into()),
        );
        for upload in [
            vec![entry(1, &alone)],
            vec![entry(1, &good), entry(2, &second)],
            vec![entry(1, &good), entry(2, &nested)],
        ] {
            let err = server.integrate_upload(client, &upload).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadChangeset, "{what}: {err:?}");
            assert!(err.message.contains("dictionary key"), "{what}: {err:?}");
            assert_eq!(
                (server.latest_version(), server.state().unwrap()),
                before,
                "{what}"
            );
        }
    }
    // The good changeset alone integrates; an embedded field name is no dictionary key.
    let mut inner = Changeset::new();
    update(
        &mut inner,
        "ed",
        &["k", "inner", "x"],
        Payload::String("v".into()),
    );
    server
        .integrate_upload(client, &[entry(1, &good), entry(2, &inner)])
        .unwrap();
    assert_eq!(server.latest_version(), before.0 + 2);
    assert_eq!(server.replay().unwrap(), server.state().unwrap());
    assert_eq!(
        ServerFile::open(&path).unwrap().state().unwrap(),
        server.state().unwrap()
    );
}

/// STATE_REQUEST's version 0 asks for the latest state. The snapshot cached while the file was
/// empty (version 0) was handed out for it after later integrations: a rollback asking for the
/// latest got a snapshot older than its download cursor, asked again and got it again forever
/// (the simulation's seed 116).
#[test]
fn a_snapshot_of_the_latest_state_is_never_an_older_cached_one() {
    let (_dir, path) = temp("snapshot-latest");
    let mut server = ServerFile::open(&path).unwrap();
    let (empty_version, empty) = server.snapshot(0).unwrap();
    assert_eq!(empty_version, 0);
    let mut rng = SeededRng::new(7);
    let mut client = Client::new(&mut server);
    while server.latest_version() == 0 {
        client.modify(&mut rng);
        client.upload(&mut server).unwrap();
    }
    let latest = server.latest_version();
    let (version, bytes) = server.snapshot(0).unwrap();
    assert_eq!(version, latest);
    assert_ne!(bytes, empty);
    // An older version is still served while it is the cached one, and the latest is
    // rebuilt when asked for again.
    assert_eq!(server.snapshot(latest).unwrap().0, latest);
}

/// An upload with a link no object can answer is refused whole, as a bad changeset, and
/// changes nothing: a link to a class that does not exist or is embedded (realm-core's
/// applier: "Link with invalid target table"), or with a key of another type than its target's
/// primary key or the null key of a required one. A realm-core replica that downloaded one
/// would fail its session with a client reset; the store kept it and read its object as
/// corrupt.
#[test]
fn links_realm_core_refuses_are_refused_with_the_whole_upload() {
    use tandem::changeset::{
        AddColumn, ColumnCollection, ColumnType, FieldPath, Instruction, Link, Payload,
        PayloadType, PrimaryKey, Update,
    };
    let (_dir, path) = temp("badlinks");
    let mut server = ServerFile::open(&path).unwrap();
    let client = Client::new(&mut server).ident;
    // T(_id int) { l: link<T>?, m: mixed }, E embedded.
    let schema = |cs: &mut Changeset| {
        let (t, _) = tables_t_and_e(cs);
        for (name, column_type) in [
            ("l", ColumnType::Link { target_table: t }),
            ("m", ColumnType::Value(PayloadType::Null)),
        ] {
            let field = cs.intern(name);
            cs.push(Instruction::AddColumn(AddColumn {
                table: t,
                field,
                column_type,
                nullable: true,
                collection: ColumnCollection::Single,
            }));
        }
        cs.push(Instruction::CreateObject {
            table: t,
            object: PrimaryKey::Int(1),
        });
    };
    // `field` of T[1] set to a link to `target[key]`.
    let link = |cs: &mut Changeset, field: &str, target: &str, key: PrimaryKey| {
        let (table, field, target_table) = (cs.intern("T"), cs.intern(field), cs.intern(target));
        cs.push(Instruction::Update(Update {
            path: FieldPath {
                table,
                object: PrimaryKey::Int(1),
                field,
                path: Default::default(),
            },
            value: Payload::Link(Link {
                target_table,
                target: key,
            }),
            is_default: false,
            prior_size: 0,
        }));
    };
    let entry = |version: u64, cs: &Changeset| UploadEntry {
        client_version: version,
        last_integrated_server_version: 0,
        origin_timestamp: 0,
        origin_file_ident: 0,
        changeset: cs.encode(),
    };
    let mut good = Changeset::new();
    schema(&mut good);
    link(&mut good, "l", "T", PrimaryKey::Int(1));
    link(&mut good, "m", "T", PrimaryKey::Int(2));
    let before = (server.latest_version(), server.state().unwrap());
    // (what, field, target class, its key, what the error says)
    type Bad = (
        &'static str,
        &'static str,
        &'static str,
        fn(&mut Changeset) -> PrimaryKey,
        &'static str,
    );
    let bads: [Bad; 5] = [
        (
            "mixed to no class",
            "m",
            "Nope",
            |_| PrimaryKey::Int(1),
            "not a class",
        ),
        (
            "mixed to an embedded class",
            "m",
            "E",
            |_| PrimaryKey::Int(1),
            "embedded",
        ),
        (
            "a string key",
            "l",
            "T",
            |cs| PrimaryKey::String(cs.intern("1")),
            "does not fit",
        ),
        (
            "a string key in mixed",
            "m",
            "T",
            |cs| PrimaryKey::String(cs.intern("1")),
            "does not fit",
        ),
        (
            "the null key of a required key",
            "l",
            "T",
            |_| PrimaryKey::Null,
            "required",
        ),
    ];
    for (what, field, target, key, says) in bads {
        let mut alone = Changeset::new();
        schema(&mut alone);
        let k = key(&mut alone);
        link(&mut alone, field, target, k);
        let mut second = Changeset::new();
        let k = key(&mut second);
        link(&mut second, field, target, k);
        for upload in [
            vec![entry(1, &alone)],
            vec![entry(1, &good), entry(2, &second)],
        ] {
            let err = server.integrate_upload(client, &upload).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadChangeset, "{what}: {err:?}");
            assert!(err.message.contains(says), "{what}: {err:?}");
            assert_eq!(
                (server.latest_version(), server.state().unwrap()),
                before,
                "{what}"
            );
        }
    }
    server.integrate_upload(client, &[entry(1, &good)]).unwrap();
    assert_eq!(server.latest_version(), before.0 + 1);
}

/// Flexible sync's writes outside the view are judged at the server version each changeset is
/// based on (flexible seeds 9324, 7957 and 6317 of the simulation): a write to an object of
/// the client's view made before a newer set's bootstrap took the object out is integrated; a
/// write to an object only the set the client had then matches is integrated; a write made
/// after the bootstrap took the object out is reverted (a compensating write).
#[test]
fn flexible_sync_judges_a_write_at_the_view_and_set_the_client_had_at_its_base() {
    use tandem::server::realm::rules::{FlxRules, UserVars};
    use tandem::server::Subscription;
    use tandem::state::{Field, Key, Val};
    let (_dir, path) = temp("flxbase");
    let mut server = ServerFile::open(&path).unwrap();
    let (writer, _) = server.allocate_client_file().unwrap();
    let (client, _) = server.allocate_client_file().unwrap();
    // Each changeset later than the one before (last writer wins on the same field).
    let clock = std::cell::Cell::new(400_000_000_000u64);
    let entry = |cs: Changeset, client_version: u64, base: u64| UploadEntry {
        client_version,
        last_integrated_server_version: base,
        origin_timestamp: {
            clock.set(clock.get() + 1);
            clock.get()
        },
        origin_file_ident: 0,
        changeset: cs.encode(),
    };
    let mut schema = t_with_n();
    set(&mut schema, 1, 1);
    server
        .integrate_upload(writer, &[entry(schema, 1, 0)])
        .unwrap();
    let n_of = |server: &ServerFile, id: i64| {
        server.state().unwrap().objects["T"][&Key::Int(id)].fields["n"].clone()
    };
    let (rules, user) = (FlxRules::default(), UserVars::default());
    let all = Subscription::parse(1, r#"{"T":"TRUEPREDICATE"}"#).unwrap();
    let none = Subscription::parse(2, r#"{"T":"_id < 0"}"#).unwrap();
    server.flx_resume(client, 0, 0).unwrap();
    let first = server.flx_bootstrap(client, &all).unwrap().unwrap().version;
    // T[2] is created after the client's first bootstrap, by another client.
    let mut later = Changeset::default();
    set(&mut later, 2, 1);
    server
        .integrate_upload(writer, &[entry(later, 2, first)])
        .unwrap();
    // The second set matches nothing: its bootstrap takes T[1] out of the view.
    let second = server
        .flx_bootstrap(client, &none)
        .unwrap()
        .unwrap()
        .version;
    assert!(second > first);

    // Made before the client integrated that bootstrap (based on `first`): T[1] was in its
    // view, T[2] matched its set. Both are integrated, no compensating write.
    let mut before = Changeset::default();
    set(&mut before, 1, 210);
    set(&mut before, 2, 55);
    let (_, compensation) = server
        .flx_integrate_checked(client, &[entry(before, 1, first)], &rules, &user, &none)
        .unwrap();
    assert!(compensation.is_none(), "{compensation:?}");
    assert_eq!(n_of(&server, 1), Field::Value(Val::Int(210)));
    assert_eq!(n_of(&server, 2), Field::Value(Val::Int(55)));

    // Made after it (based on `second`): T[1] is outside the view and the set; reverted.
    let latest = server.latest_version();
    let mut after = Changeset::default();
    set(&mut after, 1, 999);
    let (_, compensation) = server
        .flx_integrate_checked(client, &[entry(after, 2, latest)], &rules, &user, &none)
        .unwrap();
    let compensation = compensation.expect("a compensating write");
    assert_eq!(compensation.rejected.len(), 1);
    assert_eq!(compensation.rejected[0].1, Key::Int(1));
    assert_eq!(n_of(&server, 1), Field::Value(Val::Int(210)));
}

/// Every DOWNLOAD field that depends on the receiving client is what the history says: each
/// entry's `last_integrated_client_version`, `download_client_version` and
/// `upload_client_version` (the client's latest client version the server had integrated at
/// that server version) and `downloadable_bytes` (the changeset bytes after the batch that are
/// not the client's own), for every client, every cursor, and batches of one entry to all.
/// The batch assembled from the rows kept in memory (`download_in_memory`, what a fan-out
/// sends) is the same batch, field for field; after a reopen or a compaction, what sessions
/// learnt before no longer serves.
#[test]
fn download_progress_fields_follow_the_history() {
    let (_dir, path) = temp("progress");
    let mut server = ServerFile::open(&path).unwrap();
    let mut clients: Vec<Client> = (0..3).map(|_| Client::new(&mut server)).collect();
    let mut rng = SeededRng::new(31);
    // integrated[c][v]: client c's latest integrated client version at server version v,
    // observed after every upload (of at most one changeset, so every version is observed).
    let mut integrated: Vec<Vec<u64>> = vec![vec![0]; clients.len()];
    for _ in 0..80 {
        let c = rng.below(3) as usize;
        clients[c].modify(&mut rng);
        if rng.below(3) == 0 {
            clients[c].download(&server);
        }
        let before = server.latest_version();
        clients[c].upload(&mut server).unwrap();
        let latest = server.latest_version();
        assert!(latest <= before + 1, "one changeset per upload");
        for (i, client) in clients.iter().enumerate() {
            let v = server.client_version(client.ident, client.salt).unwrap();
            integrated[i].resize(latest as usize + 1, v);
        }
    }
    let latest = server.latest_version();
    assert!(latest > 40, "a history to walk: {latest}");
    let observer = Client::new(&mut server);
    let all = server.download(observer.ident, 0, usize::MAX).unwrap();
    assert_eq!(all.entries.len() as u64, latest);
    let mut checked_entries = 0;
    for (i, client) in clients.iter().enumerate() {
        for after in 0..=latest {
            for max_bytes in [1, 300, usize::MAX] {
                let batch = server.download(client.ident, after, max_bytes).unwrap();
                let at = |v: u64| integrated[i][v as usize];
                let known = DownloadPoint {
                    cursor: after,
                    client_version: at(after),
                    generation: server.generation(),
                };
                assert_eq!(
                    server.download_in_memory(client.ident, after, max_bytes, known),
                    Some(batch.clone()),
                    "client {i}, after {after}, max_bytes {max_bytes}"
                );
                // What another cursor found does not serve this one.
                let elsewhere = DownloadPoint {
                    cursor: after + 1,
                    ..known
                };
                assert_eq!(
                    server.download_in_memory(client.ident, after, max_bytes, elsewhere),
                    None
                );
                for e in &batch.entries {
                    assert_ne!(e.origin_file_ident, client.ident);
                    assert_eq!(
                        e.last_integrated_client_version,
                        at(e.server_version),
                        "client {i}, after {after}, entry {}",
                        e.server_version
                    );
                    checked_entries += 1;
                }
                let cursor = batch.download_server_version;
                assert!(cursor >= after && cursor <= latest);
                assert_eq!(
                    batch.download_client_version,
                    at(cursor),
                    "client {i}, {after}"
                );
                assert_eq!(
                    batch.upload_client_version,
                    at(latest),
                    "client {i}, {after}"
                );
                assert_eq!(batch.latest_server_version, latest);
                let remaining: u64 = all
                    .entries
                    .iter()
                    .filter(|e| e.server_version > cursor && e.origin_file_ident != client.ident)
                    .map(|e| e.changeset.len() as u64)
                    .sum();
                assert_eq!(batch.downloadable_bytes, remaining, "client {i}, {after}");
            }
        }
    }
    assert!(checked_entries > 1000, "{checked_entries}");

    // The batch a session found last, as a fan-out uses it.
    let client = &clients[0];
    let before = server.download(client.ident, 0, usize::MAX).unwrap();
    let known = before.point(server.generation());
    assert_eq!(known.cursor, latest);
    assert!(server
        .download_in_memory(client.ident, latest, usize::MAX, known)
        .is_some_and(|b| b.entries.is_empty() && b.download_server_version == latest));
    // A compaction starts a new generation: read from SQLite again, which says that it
    // expired every client file (none synced since a horizon in the future).
    server.compact(u64::MAX).unwrap();
    assert_eq!(
        server.download_in_memory(client.ident, latest, usize::MAX, known),
        None
    );
    let after_compaction = server.download(client.ident, latest, usize::MAX);
    assert!(
        after_compaction.is_err(),
        "the client expired: {after_compaction:?}"
    );
    // A reopened file holds no rows in memory, whatever a session knew.
    drop(server);
    let server = ServerFile::open(&path).unwrap();
    let known = DownloadPoint {
        generation: server.generation(),
        ..known
    };
    assert_eq!(
        server.download_in_memory(observer.ident, latest - 1, usize::MAX, known),
        None
    );
}

/// A flexible sync download from what the session's previous batch found (`known`: the
/// client's expiry and integrated client versions are not read again, and a batch that
/// leaves the view as it is is built without a blocking thread, `flx_download_unchanged`) is
/// the batch read from scratch, field for field. Two files get the same uploads (a writer's,
/// and the reader's own: its rows move its integrated client version, and its writes outside
/// its view are reverted), one downloaded with `known` and one without; objects enter and
/// leave the reader's view, batches are cut at one entry and at 300 bytes, and a compaction
/// (a new generation) comes in the middle. The first download follows the point a bootstrap
/// left (`Bootstrap::client_version`).
#[test]
fn a_flexible_download_from_a_known_point_is_the_one_read_from_scratch() {
    use tandem::server::realm::rules::{FlxRules, UserVars};
    use tandem::server::Subscription;
    // Two copies of one file (the same client file idents): `followed` downloads from known
    // points, `read` from scratch.
    let (_dir_a, path_a) = temp("flxknown-a");
    let (dir_b, path_b) = temp("flxknown-b");
    let (writer, reader) = {
        let mut server = ServerFile::open(&path_a).unwrap();
        let writer = server.allocate_client_file().unwrap().0;
        (writer, server.allocate_client_file().unwrap().0)
    };
    for file in std::fs::read_dir(path_a.parent().unwrap()).unwrap() {
        let file = file.unwrap().path();
        std::fs::copy(&file, dir_b.path().join(file.file_name().unwrap())).unwrap();
    }
    let mut followed = ServerFile::open(&path_a).unwrap();
    let mut read = ServerFile::open(&path_b).unwrap();
    // Later than now: a compensating write's timestamp follows the upload's, not the clock.
    let mut clock = 900_000_000_000u64;
    let mut entry = |cs: Changeset, client_version: u64, base: u64| {
        clock += 1;
        UploadEntry {
            client_version,
            last_integrated_server_version: base,
            origin_timestamp: clock,
            origin_file_ident: 0,
            changeset: cs.encode(),
        }
    };
    let mut schema = t_with_n();
    for id in 1..=10 {
        set(&mut schema, id, id);
    }
    let first = entry(schema, 1, 0);
    for server in [&mut followed, &mut read] {
        server
            .integrate_upload(writer, std::slice::from_ref(&first))
            .unwrap();
    }
    // The reader's view: objects whose n is above 5.
    let query = Subscription::parse(1, r#"{"T":"n > 5"}"#).unwrap();
    let (rules, user) = (FlxRules::default(), UserVars::default());
    // The first download follows the point the bootstrap leaves (as a session does), after an
    // upload of the reader's own: its integrated client version there is 1.
    let mut known: Option<DownloadPoint> = None;
    let mut cursor = 0;
    let mut own = Changeset::default();
    set(&mut own, 7, 8);
    let own = entry(own, 1, 0);
    for server in [&mut read, &mut followed] {
        server.flx_resume(reader, 0, 0).unwrap();
        server
            .flx_integrate_checked(reader, std::slice::from_ref(&own), &rules, &user, &query)
            .unwrap();
        let bootstrap = server.flx_bootstrap(reader, &query).unwrap().unwrap();
        cursor = bootstrap.version;
        known = Some(DownloadPoint {
            cursor,
            client_version: bootstrap.client_version,
            generation: server.generation(),
        });
    }
    assert_eq!(known.unwrap().client_version, 1);
    let mut rng = SeededRng::new(77);
    let (mut writer_version, mut reader_version) = (1, 1);
    let (mut unchanged, mut downloads) = (0, 0);
    // Kept across the steps for `followed`, as a session keeps it; `read` resolves afresh.
    let mut memo = tandem::server::SteadyFilters::default();
    for step in 0..200 {
        match rng.below(5) {
            // The writer sets n of an object: mostly on the same side of 5, sometimes across.
            0 | 1 => {
                let id = rng.below(10) as i64 + 1;
                let value = match rng.below(4) {
                    0 => rng.below(11) as i64,
                    _ if id > 5 => 6 + rng.below(5) as i64,
                    _ => rng.below(6) as i64,
                };
                let mut cs = Changeset::default();
                set(&mut cs, id, value);
                writer_version += 1;
                let e = entry(cs, writer_version, 0);
                for server in [&mut followed, &mut read] {
                    server
                        .integrate_upload(writer, std::slice::from_ref(&e))
                        .unwrap();
                }
            }
            // The reader writes (to objects outside its view too: those writes are stripped).
            2 => {
                let id = rng.below(10) as i64 + 1;
                let mut cs = Changeset::default();
                set(&mut cs, id, 6 + rng.below(5) as i64);
                reader_version += 1;
                let e = entry(cs, reader_version, cursor);
                for server in [&mut followed, &mut read] {
                    server
                        .flx_integrate_checked(
                            reader,
                            std::slice::from_ref(&e),
                            &rules,
                            &user,
                            &query,
                        )
                        .unwrap();
                }
            }
            _ => {
                let max_bytes = [1, 300, usize::MAX][rng.below(3) as usize];
                let quick = known.and_then(|known| {
                    let memo = &mut memo;
                    followed.flx_download_unchanged(reader, cursor, max_bytes, &query, memo, known)
                });
                unchanged += usize::from(quick.is_some());
                let batch = match quick {
                    Some(batch) => batch,
                    None => followed
                        .flx_download(reader, cursor, max_bytes, &query, &mut memo, known)
                        .unwrap(),
                };
                let mut expected = read
                    .flx_download(
                        reader,
                        cursor,
                        max_bytes,
                        &query,
                        &mut Default::default(),
                        None,
                    )
                    .unwrap();
                // Each file draws its own salts.
                let latest = batch.latest_server_version;
                assert_eq!(
                    batch.latest_server_version_salt,
                    followed.version_salt(latest).unwrap()
                );
                expected.latest_server_version_salt = batch.latest_server_version_salt;
                assert_eq!(batch, expected, "step {step}, cursor {cursor}");
                cursor = batch.download_server_version;
                known = Some(batch.point(followed.generation()));
                downloads += 1;
            }
        }
        if step == 120 {
            for server in [&mut followed, &mut read] {
                server.mark_seen(writer, server.latest_version());
                server.mark_seen(reader, cursor);
                server.compact(0).unwrap();
            }
        }
    }
    assert!(downloads > 50, "{downloads} downloads");
    assert!(
        unchanged > 10,
        "{unchanged} of {downloads} built without writing"
    );
}

/// A client file a compaction expired gets no flexible sync bootstrap (222), as it gets no
/// download: a session keeps a bootstrap's point and follows it without asking again.
#[test]
fn a_client_expired_by_a_compaction_gets_no_flexible_bootstrap() {
    use tandem::changeset::{Instruction, PrimaryKey};
    use tandem::server::Subscription;
    let (_dir, path) = temp("flxexpired");
    let mut server = ServerFile::open(&path).unwrap();
    let (writer, _) = server.allocate_client_file().unwrap();
    let (reader, _) = server.allocate_client_file().unwrap();
    let mut cs = Changeset::default();
    let (t, _) = tables_t_and_e(&mut cs);
    cs.push(Instruction::CreateObject {
        table: t,
        object: PrimaryKey::Int(1),
    });
    let upload = UploadEntry {
        client_version: 1,
        last_integrated_server_version: 0,
        origin_timestamp: 1,
        origin_file_ident: 0,
        changeset: cs.encode(),
    };
    server.integrate_upload(writer, &[upload]).unwrap();
    let query = Subscription::parse(1, r#"{"T":"TRUEPREDICATE"}"#).unwrap();
    server.flx_resume(reader, 0, 0).unwrap();
    for client in [writer, reader] {
        server.mark_seen(client, server.latest_version());
    }
    // Every client file last seen before the horizon (a minute from now) expires.
    let horizon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    server.compact(horizon).unwrap();
    let refused = server
        .flx_bootstrap(reader, &query)
        .map(|_| ())
        .unwrap_err();
    let e = refused.expect_err("a protocol error, not a query error");
    assert_eq!(e.code, ErrorCode::ClientFileExpired, "{e:?}");
    let latest = server.latest_version();
    let e = server
        .flx_download(
            reader,
            latest,
            usize::MAX,
            &query,
            &mut Default::default(),
            None,
        )
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ClientFileExpired, "{e:?}");
}

/// `client`'s `version`-th changeset, based on server version `base`: `T[id].n = n` for each
/// pair, its clock `timestamp`.
fn sets_entry(version: u64, base: u64, timestamp: u64, sets: &[(i64, i64)]) -> UploadEntry {
    let mut cs = Changeset::default();
    for &(id, n) in sets {
        set(&mut cs, id, n);
    }
    cs.meta.version = version;
    cs.meta.last_integrated_remote_version = base;
    cs.meta.origin_timestamp = timestamp;
    UploadEntry::from_changeset(&cs)
}

/// An upload's consecutive entries based on one server version are merged together (one read
/// and merge of the other clients' changesets for the run, not one an entry). The server ends
/// as it does taking each entry in an UPLOAD of its own: same history, same state, and the
/// same reciprocal forms (a later upload on the old base merges alike). An entry that fails
/// its checks in the middle of a run still gets the entries before it integrated.
#[test]
fn an_offline_backlog_merged_in_runs_ends_as_one_entry_an_upload() {
    let (_dir, path) = temp("runs");
    let mut template = ServerFile::open(&path).unwrap();
    let (writer, _) = template.allocate_client_file().unwrap();
    let (offline, _) = template.allocate_client_file().unwrap();
    // The other client: the schema, then 60 sets of objects 0 to 29, clocks 1000 and on.
    let mut schema = t_with_n();
    schema.meta.version = 1;
    let mut history = vec![UploadEntry::from_changeset(&schema)];
    for v in 2..=61u64 {
        history.push(sets_entry(
            v,
            v - 1,
            1000 + v,
            &[((v % 30) as i64, v as i64)],
        ));
    }
    template.integrate_upload(writer, &history).unwrap();
    let latest = template.latest_version();
    drop(template);
    // The offline client: its own schema, then sets of objects 20 to 49 (20 to 29 written by
    // both), some with earlier clocks than the other's and some with later, all based on
    // version 0; then two based on version 5 (another run).
    let mut backlog = vec![{
        let mut schema = t_with_n();
        schema.meta.version = 1;
        UploadEntry::from_changeset(&schema)
    }];
    for v in 2..=41u64 {
        let id = 20 + (v % 30) as i64;
        let clock = if v % 2 == 0 { 500 + v } else { 2000 + v };
        backlog.push(sets_entry(
            v,
            0,
            clock,
            &[(id, -(v as i64)), (100 + id, v as i64)],
        ));
    }
    backlog.push(sets_entry(42, 5, 3000, &[(25, 4200)]));
    backlog.push(sets_entry(43, 5, 3001, &[(26, 4300)]));
    let copy = |name: &str| {
        let to = path.with_file_name(format!("{name}.sqlite"));
        std::fs::copy(&path, &to).unwrap();
        ServerFile::open(&to).unwrap()
    };
    let (mut whole, mut single) = (copy("whole"), copy("single"));
    let integrated = whole.integrate_upload(offline, &backlog).unwrap();
    assert_eq!(integrated.versions.len(), backlog.len());
    for entry in &backlog {
        single
            .integrate_upload(offline, std::slice::from_ref(entry))
            .unwrap();
    }
    // The history as the other client downloads it: the offline client's changesets as
    // integrated.
    let changesets = |server: &ServerFile| server.download(writer, 0, usize::MAX).unwrap().entries;
    assert_eq!(whole.latest_version(), latest + backlog.len() as u64);
    assert_eq!(changesets(&whole), changesets(&single));
    assert_eq!(whole.state().unwrap(), single.state().unwrap());
    // Still behind: another changeset on version 5 meets the recorded forms.
    let later = sets_entry(44, 5, 1500, &[(21, 1), (22, 2), (23, 3)]);
    for server in [&mut whole, &mut single] {
        server
            .integrate_upload(offline, std::slice::from_ref(&later))
            .unwrap();
    }
    assert_eq!(changesets(&whole), changesets(&single));
    assert_eq!(whole.state().unwrap(), single.state().unwrap());

    // A bad entry in the middle of a run: those before it are integrated, it is refused.
    let mut faulty = copy("faulty");
    let mut bad = backlog.clone();
    let cut = bad[10].changeset.len() - 1;
    bad[10].changeset.truncate(cut);
    let err = faulty.integrate_upload(offline, &bad).unwrap_err();
    assert_eq!(err.code, ErrorCode::BadChangeset, "{err:?}");
    assert_eq!(faulty.latest_version(), latest + 10);
    let mut first_ten = copy("first-ten");
    first_ten.integrate_upload(offline, &backlog[..10]).unwrap();
    assert_eq!(changesets(&faulty), changesets(&first_ten));
    assert_eq!(faulty.state().unwrap(), first_ten.state().unwrap());
}
