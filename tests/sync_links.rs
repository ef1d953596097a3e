//! Links to objects that do not exist (realm-core's unresolved links), end to end through the
//! public API: two databases syncing through a [`ServerFile`] (every message through the wire
//! format), and once through a real in-process `tandem-server`.
//!
//! The reported case: Dog "d2" exists and `Person[1].dogs` is empty on A and B; A erases d2
//! while B links Person 1 to d2 in every kind of property. After sync the links must be
//! invisible in every read on every replica, list positions must stay consistent, and
//! re-creating d2 must bring them back.
#![cfg(feature = "server")]

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use tandem::changeset::{Instruction, PathElement, Payload};
use tandem::model::{
    ClassSchema, CollectionKind, Link, PrimaryKey, Property, PropertyType, Schema, Value,
};
use tandem::server::ServerFile;
use tandem::state::{Element, Field, Key, Object, State, Val};
use tandem::store::{Config, Database, ObjectChange};

mod wire;
use wire::{download, upload};

/// A scratch directory: the guard that removes it when dropped, and its path.
fn dir(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tandem-links-{name}-"))
        .tempdir()
        .unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}

/// Dogs keyed by name; a Person links to dogs in every way a property can.
fn schema() -> Schema {
    Schema::new(vec![
        ClassSchema::top_level(
            "Dog",
            "_id",
            vec![
                Property::new("_id", PropertyType::String),
                Property::new("name", PropertyType::String),
            ],
        ),
        ClassSchema::top_level(
            "Person",
            "_id",
            vec![
                Property::new("_id", PropertyType::Int),
                Property::link("dog", "Dog"),
                Property::link("dogs", "Dog").collection(CollectionKind::List),
                Property::link("dogset", "Dog").collection(CollectionKind::Set),
                Property::link("dogmap", "Dog").collection(CollectionKind::Dictionary),
                Property::new("any", PropertyType::Mixed),
                Property::new("anys", PropertyType::Mixed).collection(CollectionKind::List),
            ],
        ),
    ])
    .unwrap()
}

fn open(path: &Path) -> Database {
    Database::open(path, &schema(), Config::default()).unwrap()
}

fn dog(name: &str) -> Value {
    Value::Link(Link {
        class: "Dog".into(),
        key: PrimaryKey::String(name.into()),
    })
}

fn dog_val(name: &str) -> Val {
    Val::Link("Dog".into(), Key::String(name.into()))
}

const P1: PrimaryKey = PrimaryKey::Int(1);

fn person(db: &Database) -> Object {
    db.read().unwrap().object("Person", &P1).unwrap().unwrap()
}

fn field<'a>(o: &'a Object, name: &str) -> &'a Field {
    &o.fields[name]
}

fn list_of_dogs(o: &Object, name: &str) -> Vec<Val> {
    match field(o, name) {
        Field::List(items) => items
            .iter()
            .map(|e| match e {
                Element::Value(v) => v.clone(),
                Element::Embedded(_) => panic!("embedded"),
            })
            .collect(),
        other => panic!("{name} is {other:?}"),
    }
}

fn query(db: &Database, text: &str) -> Vec<PrimaryKey> {
    db.read().unwrap().query("Person", text, &[]).unwrap()
}

fn sync_all(server: &mut ServerFile, dbs: &[&Database]) {
    for db in dbs {
        upload(db, server);
    }
    for db in dbs {
        download(db, server);
    }
}

/// A and B share dogs d1, d2, d3 and an empty Person 1; then A erases d2 while B links Person
/// 1 to d2 everywhere. Returns (the guard of the scratch directory, server, A, B, the directory)
/// after a full sync.
fn reported_case(name: &str) -> (tempfile::TempDir, ServerFile, Database, Database, PathBuf) {
    let (tmp, d) = dir(name);
    let mut server = ServerFile::open(d.join("server.sqlite")).unwrap();
    let a = open(&d.join("a.sqlite"));
    let b = open(&d.join("b.sqlite"));
    let mut tx = a.begin_write().unwrap();
    for (id, name) in [("d1", "Rex"), ("d2", "Fido"), ("d3", "Bella")] {
        tx.create(
            "Dog",
            PrimaryKey::String(id.into()),
            &[("name", Value::String(name.into()))],
        )
        .unwrap();
    }
    tx.create("Person", P1, &[]).unwrap();
    tx.commit().unwrap();
    sync_all(&mut server, &[&a, &b]);
    assert_eq!(person(&b), person(&a));

    let mut tx = a.begin_write().unwrap();
    tx.erase("Dog", &PrimaryKey::String("d2".into())).unwrap();
    tx.commit().unwrap();

    let mut tx = b.begin_write().unwrap();
    tx.list_insert("Person", &P1, "dogs", 0, dog("d2")).unwrap();
    tx.set("Person", &P1, "dog", dog("d2")).unwrap();
    tx.set_insert("Person", &P1, "dogset", dog("d2")).unwrap();
    tx.dict_set("Person", &P1, "dogmap", "best", dog("d2"))
        .unwrap();
    tx.set("Person", &P1, "any", dog("d2")).unwrap();
    tx.list_insert("Person", &P1, "anys", 0, dog("d2")).unwrap();
    tx.list_insert("Person", &P1, "anys", 1, Value::Int(7))
        .unwrap();
    tx.commit().unwrap();

    // A uploads first, then B (whose changeset is rebased over A's erase), then both download.
    upload(&a, &mut server);
    upload(&b, &mut server);
    download(&a, &mut server);
    download(&b, &mut server);
    (tmp, server, a, b, d)
}

/// What every replica must read after the reported case.
fn assert_invisible(db: &Database) {
    let p = person(db);
    assert_eq!(list_of_dogs(&p, "dogs"), Vec::<Val>::new(), "dogs");
    assert_eq!(field(&p, "dog"), &Field::Value(Val::Null), "dog");
    assert_eq!(field(&p, "dogset"), &Field::Set(vec![]), "dogset");
    // A dictionary keeps the entry and reads it as null (realm-core's Dictionary::get).
    assert_eq!(
        field(&p, "dogmap"),
        &Field::Dictionary([("best".to_owned(), Element::Value(Val::Null))].into()),
        "dogmap"
    );
    assert_eq!(field(&p, "any"), &Field::Value(Val::Null), "any");
    // A list of mixed keeps the position and reads null there (realm-core's Lst<Mixed>).
    assert_eq!(list_of_dogs(&p, "anys"), vec![Val::Null, Val::Int(7)]);
}

/// The stored replica still holds the links, at the same positions on every replica.
fn assert_stored(db: &Database) {
    let state = db.export_state().unwrap();
    let raw = state.object("Person", &Key::Int(1)).unwrap();
    assert_eq!(list_of_dogs(raw, "dogs"), vec![dog_val("d2")]);
    assert_eq!(field(raw, "dog"), &Field::Value(dog_val("d2")));
}

#[test]
fn erased_target_is_invisible_in_object_reads_on_every_replica() {
    let (_dir, server, a, b, _d) = reported_case("reads");
    for db in [&a, &b] {
        assert_invisible(db);
        assert_stored(db);
    }
    // Both replicas and the server hold the same stored state.
    assert_eq!(a.export_state().unwrap(), b.export_state().unwrap());
    assert_eq!(
        a.export_state().unwrap().objects,
        server.state().unwrap().objects,
        "client and server differ"
    );
    // The reference state's read view is what the store returns, for every object.
    let state = server.state().unwrap();
    for (class, objects) in &state.objects {
        for key in objects.keys() {
            let pk = match key {
                Key::Int(i) => PrimaryKey::Int(*i),
                Key::String(s) => PrimaryKey::String(s.clone()),
                other => panic!("{other:?}"),
            };
            let stored = a.read().unwrap().object(class, &pk).unwrap();
            assert_eq!(stored, state.read(class, key), "{class}[{key}]");
        }
    }
}

#[test]
fn erased_target_is_invisible_in_queries() {
    let (_dir, _server, a, b, _d) = reported_case("queries");
    let one = vec![P1];
    for db in [&a, &b] {
        assert_eq!(query(db, "dogs.@count == 0"), one);
        assert_eq!(query(db, "dogs.@size == 0"), one);
        assert_eq!(query(db, "dogset.@count == 0"), one);
        // A dictionary counts its entries, as realm-core's Dictionary::size does.
        assert_eq!(query(db, "dogmap.@count == 1"), one);
        assert_eq!(query(db, "dog == nil"), one);
        assert_eq!(query(db, "dog != nil"), vec![]);
        assert_eq!(
            db.read()
                .unwrap()
                .query("Person", "dog == $0", &[dog("d2")])
                .unwrap(),
            vec![]
        );
        // Link traversal finds no target.
        assert_eq!(query(db, "dog.name == 'Fido'"), vec![]);
        assert_eq!(query(db, "dog.name == nil"), one);
    }

    // Sorting by a link that does not resolve sorts as null: Person 2 links to d3 (Bella),
    // Person 3 has no dog; Person 1's unresolved link sorts with Person 3's null.
    let mut tx = a.begin_write().unwrap();
    tx.create("Person", PrimaryKey::Int(2), &[("dog", dog("d3"))])
        .unwrap();
    tx.create("Person", PrimaryKey::Int(3), &[]).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        query(&a, "TRUEPREDICATE SORT(dog.name DESC)"),
        vec![PrimaryKey::Int(2), P1, PrimaryKey::Int(3)]
    );
    assert_eq!(
        query(&a, "TRUEPREDICATE SORT(dog.name ASC)"),
        vec![P1, PrimaryKey::Int(3), PrimaryKey::Int(2)]
    );
}

#[test]
fn app_positions_skip_unresolved_links_and_instructions_carry_stored_positions() {
    let (_dir, mut server, a, b, _d) = reported_case("positions");
    // The stored list is [d2 (unresolved)]; the app sees []. Inserting at app position 0 goes
    // after the unresolved link: stored position 1, prior size 1 (realm-core's virtual2real).
    let mut tx = a.begin_write().unwrap();
    tx.list_insert("Person", &P1, "dogs", 0, dog("d1")).unwrap();
    let ins = tx.changeset().instructions.last().cloned().unwrap();
    match ins {
        Instruction::ArrayInsert(i) => {
            assert_eq!(i.path.path[..], [PathElement::Index(1)]);
            assert_eq!(i.prior_size, 1);
        }
        other => panic!("{other:?}"),
    }
    tx.list_insert("Person", &P1, "dogs", 1, dog("d3")).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        list_of_dogs(&person(&a), "dogs"),
        vec![dog_val("d1"), dog_val("d3")]
    );

    // B, concurrently: appends d1 at app position 0 (its list also reads []).
    let mut tx = b.begin_write().unwrap();
    tx.list_insert("Person", &P1, "dogs", 0, dog("d3")).unwrap();
    tx.commit().unwrap();
    sync_all(&mut server, &[&a, &b]);
    sync_all(&mut server, &[&a, &b]);
    let seen_a = list_of_dogs(&person(&a), "dogs");
    assert_eq!(seen_a, list_of_dogs(&person(&b), "dogs"));
    assert_eq!(seen_a.len(), 3);
    assert_eq!(a.export_state().unwrap(), b.export_state().unwrap());

    // Set, move and erase by app position on both replicas, then sync again.
    let mut tx = a.begin_write().unwrap();
    tx.list_move("Person", &P1, "dogs", 0, 2).unwrap();
    tx.list_set("Person", &P1, "dogs", 0, dog("d1")).unwrap();
    tx.commit().unwrap();
    let expected_a = {
        let mut v = seen_a.clone();
        let moved = v.remove(0);
        v.insert(2, moved);
        v[0] = dog_val("d1");
        v
    };
    assert_eq!(list_of_dogs(&person(&a), "dogs"), expected_a);
    let mut tx = b.begin_write().unwrap();
    tx.list_erase("Person", &P1, "dogs", 2).unwrap();
    tx.commit().unwrap();
    let mut expected_b = seen_a.clone();
    expected_b.remove(2);
    assert_eq!(list_of_dogs(&person(&b), "dogs"), expected_b);
    sync_all(&mut server, &[&a, &b]);
    sync_all(&mut server, &[&a, &b]);
    assert_eq!(a.export_state().unwrap(), b.export_state().unwrap());
    assert_eq!(person(&a), person(&b));
    assert_eq!(list_of_dogs(&person(&a), "dogs").len(), 2);
    // The unresolved link is still first in the stored list on both.
    for db in [&a, &b] {
        let state = db.export_state().unwrap();
        let raw = state.object("Person", &Key::Int(1)).unwrap();
        assert_eq!(list_of_dogs(raw, "dogs")[0], dog_val("d2"));
        assert_eq!(list_of_dogs(raw, "dogs").len(), 3);
    }
}

#[test]
fn recreating_the_target_brings_the_links_back() {
    let (_dir, mut server, a, b, _d) = reported_case("recreate");
    let mut tx = a.begin_write().unwrap();
    tx.create(
        "Dog",
        PrimaryKey::String("d2".into()),
        &[("name", Value::String("Fido again".into()))],
    )
    .unwrap();
    tx.commit().unwrap();
    sync_all(&mut server, &[&a, &b]);
    for db in [&a, &b] {
        let p = person(db);
        assert_eq!(list_of_dogs(&p, "dogs"), vec![dog_val("d2")]);
        assert_eq!(field(&p, "dog"), &Field::Value(dog_val("d2")));
        assert_eq!(field(&p, "dogset"), &Field::Set(vec![dog_val("d2")]));
        assert_eq!(
            field(&p, "dogmap"),
            &Field::Dictionary([("best".to_owned(), Element::Value(dog_val("d2")))].into())
        );
        assert_eq!(field(&p, "any"), &Field::Value(dog_val("d2")));
        assert_eq!(list_of_dogs(&p, "anys"), vec![dog_val("d2"), Val::Int(7)]);
        assert_eq!(query(db, "dogs.@count == 1"), vec![P1]);
        assert_eq!(query(db, "dog.name == 'Fido again'"), vec![P1]);
        assert_eq!(query(db, "dog == nil"), vec![]);
    }
}

#[test]
fn local_erase_removes_links_with_realm_core_instructions() {
    let (_dir, d) = dir("local-erase");
    let db = open(&d.join("a.sqlite"));
    let mut tx = db.begin_write().unwrap();
    for id in ["d1", "d2"] {
        tx.create("Dog", PrimaryKey::String(id.into()), &[])
            .unwrap();
    }
    tx.create("Person", P1, &[("dog", dog("d1")), ("any", dog("d1"))])
        .unwrap();
    for (i, id) in ["d1", "d2", "d1"].iter().enumerate() {
        tx.list_insert("Person", &P1, "dogs", i as u32, dog(id))
            .unwrap();
    }
    tx.set_insert("Person", &P1, "dogset", dog("d1")).unwrap();
    tx.dict_set("Person", &P1, "dogmap", "a", dog("d1"))
        .unwrap();
    tx.list_insert("Person", &P1, "anys", 0, dog("d1")).unwrap();
    tx.commit().unwrap();

    let mut tx = db.begin_write().unwrap();
    tx.erase("Dog", &PrimaryKey::String("d1".into())).unwrap();
    let cs = tx.changeset().clone();
    tx.commit().unwrap();
    let field_of = |path: &tandem::changeset::FieldPath| cs.string(path.field).unwrap().to_owned();
    let mut seen = Vec::new();
    for i in &cs.instructions {
        seen.push(match i {
            Instruction::ArrayErase(e) => format!(
                "ArrayErase {} {:?} prior {}",
                field_of(&e.path),
                e.path.path,
                e.prior_size
            ),
            Instruction::SetErase(s) => format!("SetErase {}", field_of(&s.path)),
            Instruction::Update(u) => format!(
                "Update {} {:?} {}",
                field_of(&u.path),
                u.path.path.len(),
                matches!(u.value, Payload::Null)
            ),
            Instruction::EraseObject { .. } => "EraseObject".into(),
            other => format!("{other:?}"),
        });
    }
    seen.sort();
    let mut expected = vec![
        // realm-core erases the first occurrence each time (find_first), with the list's
        // size at that moment.
        "ArrayErase dogs [Index(0)] prior 3".to_owned(),
        "ArrayErase dogs [Index(1)] prior 2".to_owned(),
        "ArrayErase anys [Index(0)] prior 1".to_owned(),
        "SetErase dogset".to_owned(),
        "Update dog 0 true".to_owned(),
        "Update any 0 true".to_owned(),
        "Update dogmap 1 true".to_owned(),
        "EraseObject".to_owned(),
    ];
    expected.sort();
    assert_eq!(seen, expected);
    assert!(matches!(
        cs.instructions.last(),
        Some(Instruction::EraseObject { .. })
    ));

    // Removed, not unresolved: re-creating d1 does not bring the links back.
    let mut tx = db.begin_write().unwrap();
    tx.create("Dog", PrimaryKey::String("d1".into()), &[])
        .unwrap();
    tx.commit().unwrap();
    let p = person(&db);
    assert_eq!(list_of_dogs(&p, "dogs"), vec![dog_val("d2")]);
    assert_eq!(field(&p, "dog"), &Field::Value(Val::Null));
    assert_eq!(field(&p, "dogset"), &Field::Set(vec![]));
    assert_eq!(
        field(&p, "dogmap"),
        &Field::Dictionary([("a".to_owned(), Element::Value(Val::Null))].into())
    );
    assert_eq!(list_of_dogs(&p, "anys"), Vec::<Val>::new());
}

#[test]
fn listeners_see_links_become_unresolved_and_resolve_again() {
    let (_dir, d) = dir("listeners");
    let mut server = ServerFile::open(d.join("server.sqlite")).unwrap();
    let a = open(&d.join("a.sqlite"));
    let b = open(&d.join("b.sqlite"));
    let mut tx = a.begin_write().unwrap();
    tx.create("Dog", PrimaryKey::String("d2".into()), &[])
        .unwrap();
    tx.create("Person", P1, &[]).unwrap();
    tx.commit().unwrap();
    sync_all(&mut server, &[&a, &b]);

    let (obj_tx, obj_rx) = mpsc::channel();
    let _object_token = b
        .observe_object("Person", &P1, move |c| {
            let _ = obj_tx.send(c);
        })
        .unwrap();
    let (res_tx, res_rx) = mpsc::channel();
    let _results_token = b
        .observe_query("Person", "dog == nil", &[], move |c| {
            let _ = res_tx.send(c.clone());
        })
        .unwrap();
    let next_object = || obj_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let next_results = || res_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let dog_and_dogs = ObjectChange::Modified {
        properties: vec!["dog".into(), "dogs".into()],
    };

    // A erases d2 (it holds no link to it, so only EraseObject); B, concurrently, links to it.
    let mut tx = a.begin_write().unwrap();
    tx.erase("Dog", &PrimaryKey::String("d2".into())).unwrap();
    tx.commit().unwrap();
    upload(&a, &mut server);
    let mut tx = b.begin_write().unwrap();
    tx.set("Person", &P1, "dog", dog("d2")).unwrap();
    tx.list_insert("Person", &P1, "dogs", 0, dog("d2")).unwrap();
    tx.commit().unwrap();
    assert_eq!(next_object(), dog_and_dogs);
    assert_eq!(next_results().deletions, vec![0]);

    // The erase arrives: B's Person 1 reads differently, though no instruction touched it.
    download(&b, &mut server);
    assert_eq!(next_object(), dog_and_dogs);
    let results = next_results();
    assert_eq!(results.insertions, vec![0]);
    assert_eq!(results.keys, vec![P1]);

    // d2 is created again on A: B's links resolve again.
    let mut tx = a.begin_write().unwrap();
    tx.create("Dog", PrimaryKey::String("d2".into()), &[])
        .unwrap();
    tx.commit().unwrap();
    upload(&a, &mut server);
    download(&b, &mut server);
    assert_eq!(next_object(), dog_and_dogs);
    let results = next_results();
    assert_eq!(results.deletions, vec![0]);
    assert!(results.keys.is_empty());
    assert_eq!(
        list_of_dogs(&person(&b), "dogs"),
        vec![dog_val("d2")],
        "resolved again"
    );
}

#[test]
fn state_snapshot_keeps_positions_and_reads_the_same() {
    let (_dir, mut server, a, _b, d) = reported_case("snapshot");
    let (_, bytes) = server.snapshot(server.latest_version()).unwrap();
    let snapshot = tandem::changeset::Changeset::decode(&bytes).unwrap();
    // A new client bootstrapped from the snapshot holds the unresolved links at the same
    // stored positions (so later instructions mean the same), and reads exactly as A does.
    let mut fresh = State::new();
    fresh.apply(&snapshot).unwrap();
    assert_eq!(fresh.objects, server.state().unwrap().objects);
    assert_eq!(
        fresh.read("Person", &Key::Int(1)),
        Some(person(&a)),
        "snapshot read view"
    );
    // The same through a store: a third client that bootstraps from the snapshot.
    let c = open(&d.join("c.sqlite"));
    c.apply_remote(&snapshot).unwrap();
    assert_eq!(person(&c), person(&a));
    assert_invisible(&c);
}

/// The reported case against a real in-process `tandem-server`, over TLS on loopback.
mod live;

#[test]
fn reported_case_through_a_real_server() {
    use std::sync::Arc;
    let world = live::World::new("links");
    let open_live = |name: &str| {
        Arc::new(Database::open(world.dir.join(name), &schema(), Config::default()).unwrap())
    };
    let a = open_live("a.sqlite");
    let b = open_live("b.sqlite");
    let wait = |session: &tandem::client::SyncSession| {
        world
            .block_on(session.wait_for_upload(Some(Duration::from_secs(20))))
            .unwrap();
        world
            .block_on(session.wait_for_download(Some(Duration::from_secs(20))))
            .unwrap();
    };
    let sa = world.sync(&a);
    let mut tx = a.begin_write().unwrap();
    tx.create("Dog", PrimaryKey::String("d2".into()), &[])
        .unwrap();
    tx.create("Person", P1, &[]).unwrap();
    tx.commit().unwrap();
    wait(&sa);
    let sb = world.sync(&b);
    wait(&sb);
    assert!(b.read().unwrap().object("Person", &P1).unwrap().is_some());

    // Offline: B links to d2 while A erases it.
    sb.stop();
    let mut tx = a.begin_write().unwrap();
    tx.erase("Dog", &PrimaryKey::String("d2".into())).unwrap();
    tx.commit().unwrap();
    wait(&sa);
    let mut tx = b.begin_write().unwrap();
    tx.list_insert("Person", &P1, "dogs", 0, dog("d2")).unwrap();
    tx.set("Person", &P1, "dog", dog("d2")).unwrap();
    tx.commit().unwrap();
    let sb = world.sync(&b);
    wait(&sb);
    wait(&sa);
    for db in [&a, &b] {
        let p = person(db);
        assert_eq!(list_of_dogs(&p, "dogs"), Vec::<Val>::new());
        assert_eq!(field(&p, "dog"), &Field::Value(Val::Null));
        assert_eq!(query(db, "dogs.@count == 0"), vec![P1]);
        assert_eq!(query(db, "dog == nil"), vec![P1]);
    }
    assert_eq!(a.export_state().unwrap(), b.export_state().unwrap());
}

/// What the bindings read (the uniffi facade) hides unresolved links the same way.
#[cfg(feature = "ffi")]
#[test]
fn bindings_read_the_same_view() {
    use tandem::ffi::{self, Collection, FieldValue, PropertySpec, PropertyType as T};
    let (_dir, _server, a, _b, d) = reported_case("ffi");
    let path = d.join("a.sqlite");
    drop(a);
    let prop = |name: &str, t: T, collection: Collection, target: Option<&str>| PropertySpec {
        name: name.into(),
        property_type: t,
        nullable: matches!(t, T::Mixed)
            || (t == T::Link && matches!(collection, Collection::Single | Collection::Dictionary)),
        collection,
        link_target: target.map(Into::into),
        indexed: false,
    };
    let classes = vec![
        ffi::ClassSpec {
            name: "Dog".into(),
            primary_key: Some("_id".into()),
            properties: vec![
                prop("_id", T::String, Collection::Single, None),
                prop("name", T::String, Collection::Single, None),
            ],
        },
        ffi::ClassSpec {
            name: "Person".into(),
            primary_key: Some("_id".into()),
            properties: vec![
                prop("_id", T::Int, Collection::Single, None),
                prop("dog", T::Link, Collection::Single, Some("Dog")),
                prop("dogs", T::Link, Collection::List, Some("Dog")),
                prop("dogset", T::Link, Collection::Set, Some("Dog")),
                prop("dogmap", T::Link, Collection::Dictionary, Some("Dog")),
                prop("any", T::Mixed, Collection::Single, None),
                prop("anys", T::Mixed, Collection::List, None),
            ],
        },
    ];
    let db = ffi::Database::open(path.to_string_lossy().into_owned(), classes).unwrap();
    let p = db
        .object("Person".into(), ffi::Key::Int { value: 1 })
        .unwrap()
        .unwrap();
    assert_eq!(p["dogs"], FieldValue::List { items: vec![] });
    assert_eq!(
        p["dog"],
        FieldValue::Single {
            value: ffi::Value::Null
        }
    );
    assert_eq!(p["dogset"], FieldValue::Set { items: vec![] });
    assert_eq!(
        p["anys"],
        FieldValue::List {
            items: vec![ffi::Value::Null, ffi::Value::Int { value: 7 }]
        }
    );
}
