//! Collection operations of the store's write transaction: list set/move/clear, set and
//! dictionary clear, and every collection operation on collections inside embedded objects
//! (`PropertyPath`). Each checks the state read back, the Realm instructions recorded (what
//! syncs), and that the history replays through the reference applier to the same state.

use std::path::PathBuf;

use tandem::model::{
    ClassSchema, CollectionKind, PrimaryKey, Property, PropertyType, Schema, Value,
};
use tandem::state::{Element, Field, Object, Val};
use tandem::store::{Config, Database, PathStep, StoreError};

/// A scratch directory (removed when the returned guard is dropped) and a path in it.
fn temp_db(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tandem-collections-{name}-"))
        .tempdir()
        .unwrap();
    let path = dir.path().join("db.sqlite");
    (dir, path)
}

/// `Person` holds collections itself and embedded `Address`es (one, a list, a dictionary) that
/// hold their own collections, a counter and links.
fn schema() -> Schema {
    let collections = |mut props: Vec<Property>| {
        props.extend([
            Property::new("tags", PropertyType::String).collection(CollectionKind::List),
            Property::new("lucky", PropertyType::Int).collection(CollectionKind::Set),
            Property::new("notes", PropertyType::String)
                .collection(CollectionKind::Dictionary)
                .nullable(),
            Property::link("dogs", "Dog").collection(CollectionKind::List),
        ]);
        props
    };
    Schema::new(vec![
        ClassSchema::top_level(
            "Person",
            "_id",
            collections(vec![
                Property::new("_id", PropertyType::Int),
                Property::link("address", "Address"),
                Property::link("addresses", "Address").collection(CollectionKind::List),
                Property::link("places", "Address").collection(CollectionKind::Dictionary),
            ]),
        ),
        ClassSchema::top_level(
            "Dog",
            "_id",
            vec![Property::new("_id", PropertyType::String)],
        ),
        ClassSchema::embedded(
            "Address",
            collections(vec![
                Property::new("street", PropertyType::String),
                Property::new("visits", PropertyType::Int),
            ]),
        ),
    ])
    .unwrap()
}

const P1: PrimaryKey = PrimaryKey::Int(1);

fn s(v: &str) -> Value {
    Value::String(v.into())
}

fn dog(k: &str) -> Value {
    Value::Link(tandem::model::Link {
        class: "Dog".into(),
        key: PrimaryKey::String(k.into()),
    })
}

fn strings(items: &[&str]) -> Field {
    Field::List(
        items
            .iter()
            .map(|v| Element::Value(Val::String((*v).into())))
            .collect(),
    )
}

fn person(db: &Database) -> Object {
    db.read().unwrap().object("Person", &P1).unwrap().unwrap()
}

/// The history replays through the in-memory reference applier to the store's state: the
/// recorded instructions say exactly what happened (what another replica will apply).
fn assert_replays(db: &Database) {
    let mut replay = tandem::state::State::new();
    for cs in db.history().unwrap() {
        replay.apply(&cs).unwrap();
    }
    assert_eq!(replay, db.export_state().unwrap());
}

/// The last committed transaction's instructions, rendered one a line.
fn last_instructions(db: &Database) -> Vec<String> {
    let history = db.history().unwrap();
    let cs = history.last().unwrap();
    cs.to_string().lines().map(str::to_owned).collect()
}

#[test]
fn list_set_move_clear_set_clear_and_dict_clear_record_realm_instructions() {
    let (_dir, path) = temp_db("clears");
    let db = Database::open(path, &schema(), Config::default()).unwrap();
    let mut tx = db.begin_write().unwrap();
    tx.create("Person", P1, &[]).unwrap();
    for (i, v) in ["a", "b", "c"].into_iter().enumerate() {
        tx.list_insert("Person", &P1, "tags", i as u32, s(v))
            .unwrap();
    }
    tx.set_insert("Person", &P1, "lucky", Value::Int(7))
        .unwrap();
    tx.dict_set("Person", &P1, "notes", "k", s("v")).unwrap();
    tx.commit().unwrap();

    let mut tx = db.begin_write().unwrap();
    tx.list_set("Person", &P1, "tags", 1, s("B")).unwrap();
    tx.list_move("Person", &P1, "tags", 0, 2).unwrap();
    tx.commit().unwrap();
    assert_eq!(person(&db).fields["tags"], strings(&["B", "c", "a"]));
    assert_eq!(
        last_instructions(&db),
        [
            r#"Update Person[1].tags[1] = "B" (prior_size 3)"#,
            "ArrayMove Person[1].tags[0] -> 2 (prior_size 3)",
        ]
    );

    let mut tx = db.begin_write().unwrap();
    tx.list_clear("Person", &P1, "tags").unwrap();
    tx.set_clear("Person", &P1, "lucky").unwrap();
    tx.dict_clear("Person", &P1, "notes").unwrap();
    tx.commit().unwrap();
    let p = person(&db);
    assert_eq!(p.fields["tags"], Field::List(vec![]));
    assert_eq!(p.fields["lucky"], Field::Set(vec![]));
    assert_eq!(p.fields["notes"], Field::Dictionary(Default::default()));
    assert_eq!(
        last_instructions(&db),
        [
            "Clear Person[1].tags (List)",
            "Clear Person[1].lucky (Set)",
            "Clear Person[1].notes (Dictionary)",
        ]
    );
    assert_replays(&db);
}

/// The embedded object at each of the three kinds of place, as the steps that reach its
/// properties and the same steps as Realm renders them.
fn embedded_places() -> Vec<(&'static str, Vec<PathStep>, &'static str)> {
    vec![
        ("address", vec![], "address"),
        ("addresses", vec![PathStep::Index(0)], "addresses[0]"),
        ("places", vec![PathStep::Name("home".into())], "places.home"),
    ]
}

fn embedded(object: &Object, property: &str, steps: &[PathStep]) -> Object {
    match (&object.fields[property], steps) {
        (Field::Embedded(Some(o)), []) => o.clone(),
        (Field::List(items), [PathStep::Index(i)]) => match &items[*i as usize] {
            Element::Embedded(o) => o.clone(),
            other => panic!("{other:?}"),
        },
        (Field::Dictionary(entries), [PathStep::Name(k)]) => match &entries[k] {
            Element::Embedded(o) => o.clone(),
            other => panic!("{other:?}"),
        },
        (other, _) => panic!("{other:?}"),
    }
}

#[test]
fn every_collection_operation_reaches_collections_inside_embedded_objects() {
    for (property, to_object, rendered) in embedded_places() {
        let (_dir, path) = temp_db(&format!("embedded-{property}"));
        let db = Database::open(path, &schema(), Config::default()).unwrap();
        let mut tx = db.begin_write().unwrap();
        tx.create("Person", P1, &[]).unwrap();
        tx.create("Dog", PrimaryKey::String("rex".into()), &[])
            .unwrap();
        match property {
            "addresses" => tx.list_push_embedded("Person", &P1, property).unwrap(),
            "places" => tx
                .create_embedded_at("Person", &P1, property, &to_object)
                .unwrap(),
            _ => tx.create_embedded("Person", &P1, property).unwrap(),
        }
        tx.commit().unwrap();

        let steps = |field: &str| {
            let mut steps = to_object.clone();
            steps.push(PathStep::Name(field.into()));
            steps
        };
        let (tags, lucky, notes, visits, dogs) = (
            steps("tags"),
            steps("lucky"),
            steps("notes"),
            steps("visits"),
            steps("dogs"),
        );
        let mut tx = db.begin_write().unwrap();
        for (i, v) in ["a", "b", "c"].into_iter().enumerate() {
            tx.list_insert("Person", &P1, (property, &tags[..]), i as u32, s(v))
                .unwrap();
        }
        tx.list_set("Person", &P1, (property, &tags[..]), 1, s("B"))
            .unwrap();
        tx.list_move("Person", &P1, (property, &tags[..]), 0, 2)
            .unwrap();
        tx.list_erase("Person", &P1, (property, &tags[..]), 0)
            .unwrap();
        tx.set_insert("Person", &P1, (property, &lucky[..]), Value::Int(7))
            .unwrap();
        tx.set_insert("Person", &P1, (property, &lucky[..]), Value::Int(8))
            .unwrap();
        tx.set_erase("Person", &P1, (property, &lucky[..]), Value::Int(7))
            .unwrap();
        tx.dict_set("Person", &P1, (property, &notes[..]), "x", s("1"))
            .unwrap();
        tx.dict_set("Person", &P1, (property, &notes[..]), "y", s("2"))
            .unwrap();
        tx.dict_erase("Person", &P1, (property, &notes[..]), "x")
            .unwrap();
        tx.add("Person", &P1, (property, &visits[..]), 5).unwrap();
        // A link to a missing dog is invisible to the app: rex, inserted at app position 0,
        // goes after it (stored position 1), as realm-core's `LnkLst` does.
        tx.list_insert("Person", &P1, (property, &dogs[..]), 0, dog("ghost"))
            .unwrap();
        tx.list_insert("Person", &P1, (property, &dogs[..]), 0, dog("rex"))
            .unwrap();
        tx.commit().unwrap();

        let inner = embedded(&person(&db), property, &to_object);
        assert_eq!(inner.fields["tags"], strings(&["c", "a"]), "{property}");
        assert_eq!(inner.fields["lucky"], Field::Set(vec![Val::Int(8)]));
        let Field::Dictionary(notes_read) = &inner.fields["notes"] else {
            panic!("{:?}", inner.fields["notes"]);
        };
        assert_eq!(notes_read.keys().collect::<Vec<_>>(), ["y"]);
        assert_eq!(inner.fields["visits"], Field::Value(Val::Int(5)));
        let r = rendered;
        assert_eq!(
            last_instructions(&db),
            [
                format!(r#"ArrayInsert Person[1].{r}.tags[0] = "a" (prior_size 0)"#),
                format!(r#"ArrayInsert Person[1].{r}.tags[1] = "b" (prior_size 1)"#),
                format!(r#"ArrayInsert Person[1].{r}.tags[2] = "c" (prior_size 2)"#),
                format!(r#"Update Person[1].{r}.tags[1] = "B" (prior_size 3)"#),
                format!("ArrayMove Person[1].{r}.tags[0] -> 2 (prior_size 3)"),
                format!("ArrayErase Person[1].{r}.tags[0] (prior_size 3)"),
                format!("SetInsert Person[1].{r}.lucky 7"),
                format!("SetInsert Person[1].{r}.lucky 8"),
                format!("SetErase Person[1].{r}.lucky 7"),
                format!(r#"Update Person[1].{r}.notes.x = "1""#),
                format!(r#"Update Person[1].{r}.notes.y = "2""#),
                format!("Update Person[1].{r}.notes.x = <Erased>"),
                format!("AddInteger Person[1].{r}.visits += 5"),
                format!(r#"ArrayInsert Person[1].{r}.dogs[0] = Link(Dog["ghost"]) (prior_size 0)"#),
                format!(r#"ArrayInsert Person[1].{r}.dogs[1] = Link(Dog["rex"]) (prior_size 1)"#),
            ]
        );

        // A link list inside an embedded object skips links to missing objects, as the
        // object's own does: position 0 is rex (the stored position 1).
        let mut tx = db.begin_write().unwrap();
        tx.list_set("Person", &P1, (property, &dogs[..]), 0, dog("rex"))
            .unwrap();
        tx.list_clear("Person", &P1, (property, &tags[..])).unwrap();
        tx.set_clear("Person", &P1, (property, &lucky[..])).unwrap();
        tx.dict_clear("Person", &P1, (property, &notes[..]))
            .unwrap();
        tx.commit().unwrap();
        let lines = last_instructions(&db);
        assert!(
            lines[0].starts_with(&format!("Update Person[1].{rendered}.dogs[1] = ")),
            "{lines:?}"
        );
        assert_eq!(lines[1], format!("Clear Person[1].{rendered}.tags (List)"));
        assert_eq!(lines[2], format!("Clear Person[1].{rendered}.lucky (Set)"));
        assert_eq!(
            lines[3],
            format!("Clear Person[1].{rendered}.notes (Dictionary)")
        );
        let inner = embedded(&person(&db), property, &to_object);
        assert_eq!(inner.fields["tags"], Field::List(vec![]));
        assert_eq!(inner.fields["lucky"], Field::Set(vec![]));
        assert_eq!(inner.fields["notes"], Field::Dictionary(Default::default()));
        assert_replays(&db);
    }
}

#[test]
fn a_path_that_names_no_collection_is_refused_and_writes_nothing() {
    let (_dir, path) = temp_db("bad-paths");
    let db = Database::open(path, &schema(), Config::default()).unwrap();
    let mut tx = db.begin_write().unwrap();
    tx.create("Person", P1, &[]).unwrap();
    tx.commit().unwrap();
    let before = db.export_state().unwrap();

    let mut tx = db.begin_write().unwrap();
    let tags: &[PathStep] = &[PathStep::Name("tags".into())];
    // No embedded object in `address` yet.
    let err = tx
        .list_insert("Person", &P1, ("address", tags), 0, s("a"))
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err}");
    // A property that is not a list.
    let street: &[PathStep] = &[PathStep::Name("street".into())];
    tx.create_embedded("Person", &P1, "address").unwrap();
    let err = tx
        .list_insert("Person", &P1, ("address", street), 0, s("a"))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidArgument(ref m) if m.contains("not a list")),
        "{err}"
    );
    // A list element that does not exist.
    let first: &[PathStep] = &[PathStep::Index(0), PathStep::Name("tags".into())];
    let err = tx
        .list_insert("Person", &P1, ("addresses", first), 0, s("a"))
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err}");
    // A set operation on a list inside an embedded object is refused by the applier.
    let err = tx
        .set_insert("Person", &P1, ("address", tags), s("a"))
        .unwrap_err();
    assert!(matches!(err, StoreError::Rejected(_)), "{err}");
    tx.rollback();
    assert_eq!(db.export_state().unwrap(), before);
}

/// Clearing a property as a collection kind it is not is refused before anything is recorded,
/// naming the property and both kinds (top level and inside an embedded object); the
/// transaction goes on.
#[test]
fn clearing_the_wrong_kind_names_the_property() {
    let (_dir, path) = temp_db("wrong-clear");
    let db = Database::open(path, &schema(), Config::default()).unwrap();
    let mut tx = db.begin_write().unwrap();
    tx.create("Person", P1, &[]).unwrap();
    tx.create_embedded_at("Person", &P1, "address", &[])
        .unwrap();
    let refused = |e: StoreError| match e {
        StoreError::InvalidArgument(m) => m,
        other => panic!("{other}"),
    };
    let m = refused(tx.dict_clear("Person", &P1, "tags").unwrap_err());
    assert_eq!(
        m,
        "Person.tags is a List, not a Dictionary: nothing to clear"
    );
    let m = refused(tx.list_clear("Person", &P1, "lucky").unwrap_err());
    assert_eq!(m, "Person.lucky is a Set, not a List: nothing to clear");
    let steps = [PathStep::Name("street".into())];
    let street = tandem::store::PropertyPath {
        property: "address",
        steps: &steps,
    };
    let m = refused(tx.set_clear("Person", &P1, street).unwrap_err());
    assert_eq!(
        m,
        "Address.street is a single value, not a Set: nothing to clear"
    );
    let before = tx.changeset().len();
    tx.list_clear("Person", &P1, "tags").unwrap();
    assert_eq!(
        tx.changeset().len(),
        before + 1,
        "the right kind still clears"
    );
    tx.commit().unwrap();
}
