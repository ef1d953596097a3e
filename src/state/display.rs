//! A readable dump of a [`State`], used in test failure messages.

use std::fmt;

use super::{Element, Field, Object, State, TableSpec};

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, schema) in &self.schemas {
            match &schema.spec {
                TableSpec::Embedded => writeln!(f, "table {name} (embedded)")?,
                TableSpec::TopLevel {
                    pk_field, pk_type, ..
                } => writeln!(f, "table {name} (pk {pk_field}: {pk_type:?})")?,
            }
            for (column, spec) in &schema.columns {
                writeln!(f, "  column {column}: {spec:?}")?;
            }
            for (key, object) in self.objects.get(name).into_iter().flatten() {
                write!(f, "  {name}[{key}] ")?;
                write_object(f, object)?;
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

fn write_object(f: &mut fmt::Formatter<'_>, object: &Object) -> fmt::Result {
    f.write_str("{")?;
    for (i, (name, field)) in object.fields.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{name}: ")?;
        match field {
            Field::Value(v) => write!(f, "{v}")?,
            Field::Embedded(None) => f.write_str("null")?,
            Field::Embedded(Some(o)) => write_object(f, o)?,
            Field::List(items) => {
                f.write_str("[")?;
                for (j, e) in items.iter().enumerate() {
                    if j > 0 {
                        f.write_str(", ")?;
                    }
                    write_element(f, e)?;
                }
                f.write_str("]")?;
            }
            Field::Set(items) => {
                f.write_str("set{")?;
                for (j, v) in items.iter().enumerate() {
                    if j > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("}")?;
            }
            Field::Dictionary(entries) => {
                f.write_str("dict{")?;
                for (j, (k, e)) in entries.iter().enumerate() {
                    if j > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k:?}: ")?;
                    write_element(f, e)?;
                }
                f.write_str("}")?;
            }
        }
    }
    f.write_str("}")
}

fn write_element(f: &mut fmt::Formatter<'_>, e: &Element) -> fmt::Result {
    match e {
        Element::Value(v) => write!(f, "{v}"),
        Element::Embedded(o) => write_object(f, o),
    }
}
