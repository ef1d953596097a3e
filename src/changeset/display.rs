//! A readable rendering of changesets, one instruction per line, with intern strings resolved.
//!
//! Meant for logs, debugging and test failure messages, for example:
//!
//! ```text
//! CreateObject Person[5]
//! Update Person[5].name = "Bob"
//! ArrayInsert Person[5].tags[0] = "x" (prior_size 2)
//! ```

use std::fmt::{self, Write};

use super::instruction::*;
use super::Changeset;

impl fmt::Display for Changeset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for instruction in &self.instructions {
            Line {
                changeset: self,
                instruction,
            }
            .fmt(f)?;
            f.write_char('\n')?;
        }
        Ok(())
    }
}

impl Changeset {
    /// Renders one instruction the way `Display` renders each line of a changeset.
    pub fn display_instruction<'a>(
        &'a self,
        instruction: &'a Instruction,
    ) -> impl fmt::Display + 'a {
        Line {
            changeset: self,
            instruction,
        }
    }
}

struct Line<'a> {
    changeset: &'a Changeset,
    instruction: &'a Instruction,
}

impl Line<'_> {
    fn name(&self, f: &mut fmt::Formatter<'_>, s: InternString) -> fmt::Result {
        match self.changeset.string(s) {
            Some(name) => f.write_str(name),
            None => write!(f, "#{}?", s.0),
        }
    }

    fn quoted(&self, f: &mut fmt::Formatter<'_>, s: InternString) -> fmt::Result {
        match self.changeset.string(s) {
            Some(name) => write!(f, "{name:?}"),
            None => write!(f, "#{}?", s.0),
        }
    }

    fn key(&self, f: &mut fmt::Formatter<'_>, pk: &PrimaryKey) -> fmt::Result {
        match pk {
            PrimaryKey::Null => f.write_str("null"),
            PrimaryKey::Int(v) => write!(f, "{v}"),
            PrimaryKey::String(s) => self.quoted(f, *s),
            PrimaryKey::GlobalKey(k) => write!(f, "GlobalKey({}, {})", k.hi, k.lo),
            PrimaryKey::ObjectId(id) => write!(f, "ObjectId({id})"),
            PrimaryKey::Uuid(id) => write!(f, "UUID({id})"),
        }
    }

    fn object(
        &self,
        f: &mut fmt::Formatter<'_>,
        table: InternString,
        pk: &PrimaryKey,
    ) -> fmt::Result {
        self.name(f, table)?;
        f.write_char('[')?;
        self.key(f, pk)?;
        f.write_char(']')
    }

    fn path(&self, f: &mut fmt::Formatter<'_>, path: &FieldPath) -> fmt::Result {
        self.object(f, path.table, &path.object)?;
        f.write_char('.')?;
        self.name(f, path.field)?;
        for element in &path.path {
            match element {
                PathElement::Index(i) => write!(f, "[{i}]")?,
                PathElement::Key(k) => match self.changeset.string(*k) {
                    Some(s)
                        if !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_') =>
                    {
                        write!(f, ".{s}")?
                    }
                    _ => {
                        f.write_char('[')?;
                        self.quoted(f, *k)?;
                        f.write_char(']')?
                    }
                },
            }
        }
        Ok(())
    }

    fn payload(&self, f: &mut fmt::Formatter<'_>, p: &Payload) -> fmt::Result {
        match p {
            Payload::Set => f.write_str("<Set>"),
            Payload::List => f.write_str("<List>"),
            Payload::Erased => f.write_str("<Erased>"),
            Payload::Dictionary => f.write_str("<Dictionary>"),
            Payload::ObjectValue => f.write_str("<ObjectValue>"),
            Payload::GlobalKey(k) => write!(f, "GlobalKey({}, {})", k.hi, k.lo),
            Payload::Null => f.write_str("null"),
            Payload::Int(v) => write!(f, "{v}"),
            Payload::Bool(v) => write!(f, "{v}"),
            Payload::String(s) => write!(f, "{s:?}"),
            Payload::Binary(b) => {
                f.write_str("Binary(")?;
                b.iter().try_for_each(|byte| write!(f, "{byte:02x}"))?;
                f.write_char(')')
            }
            Payload::Timestamp(t) => write!(f, "Timestamp({}, {})", t.seconds(), t.nanoseconds()),
            Payload::Float(v) => write!(f, "{v:?}f"),
            Payload::Double(v) => write!(f, "{v:?}"),
            Payload::Decimal(d) => write!(f, "Decimal({d})"),
            Payload::Link(link) => {
                f.write_str("Link(")?;
                self.object(f, link.target_table, &link.target)?;
                f.write_char(')')
            }
            Payload::ObjectId(id) => write!(f, "ObjectId({id})"),
            Payload::Uuid(id) => write!(f, "UUID({id})"),
        }
    }

    fn table_kind(&self, f: &mut fmt::Formatter<'_>, kind: &TableKind) -> fmt::Result {
        let (label, spec) = match kind {
            TableKind::Embedded => return f.write_str("embedded"),
            TableKind::TopLevel(spec) => ("top-level", spec),
            TableKind::TopLevelAsymmetric(spec) => ("asymmetric", spec),
        };
        write!(f, "{label}, pk ")?;
        self.name(f, spec.field)?;
        let optional = if spec.nullable { "?" } else { "" };
        write!(f, ": {:?}{optional}", spec.key_type)
    }

    fn column_type(&self, f: &mut fmt::Formatter<'_>, add: &AddColumn) -> fmt::Result {
        let optional = if add.nullable { "?" } else { "" };
        let element = |f: &mut fmt::Formatter<'_>| -> fmt::Result {
            match add.column_type {
                ColumnType::Mixed => f.write_str("Mixed"),
                ColumnType::Value(t) => write!(f, "{t:?}{optional}"),
                ColumnType::Link { target_table } => {
                    f.write_str("Link<")?;
                    self.name(f, target_table)?;
                    write!(f, ">{optional}")
                }
            }
        };
        match add.collection {
            ColumnCollection::Single => element(f),
            ColumnCollection::List => {
                f.write_str("List<")?;
                element(f)?;
                f.write_char('>')
            }
            ColumnCollection::Set => {
                f.write_str("Set<")?;
                element(f)?;
                f.write_char('>')
            }
            ColumnCollection::Dictionary { key_type } => {
                write!(f, "Dictionary<{key_type:?}, ")?;
                element(f)?;
                f.write_char('>')
            }
        }
    }
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.instruction {
            Instruction::AddTable(add) => {
                f.write_str("AddTable ")?;
                self.name(f, add.table)?;
                f.write_str(" (")?;
                self.table_kind(f, &add.kind)?;
                f.write_char(')')
            }
            Instruction::EraseTable { table } => {
                f.write_str("EraseTable ")?;
                self.name(f, *table)
            }
            Instruction::CreateObject { table, object } => {
                f.write_str("CreateObject ")?;
                self.object(f, *table, object)
            }
            Instruction::EraseObject { table, object } => {
                f.write_str("EraseObject ")?;
                self.object(f, *table, object)
            }
            Instruction::Update(update) => {
                f.write_str("Update ")?;
                self.path(f, &update.path)?;
                f.write_str(" = ")?;
                self.payload(f, &update.value)?;
                if update.is_element_update() {
                    write!(f, " (prior_size {})", update.prior_size)
                } else if update.is_default {
                    f.write_str(" (default)")
                } else {
                    Ok(())
                }
            }
            Instruction::AddInteger(add) => {
                f.write_str("AddInteger ")?;
                self.path(f, &add.path)?;
                write!(f, " += {}", add.value)
            }
            Instruction::AddColumn(add) => {
                f.write_str("AddColumn ")?;
                self.name(f, add.table)?;
                f.write_char('.')?;
                self.name(f, add.field)?;
                f.write_str(": ")?;
                self.column_type(f, add)
            }
            Instruction::EraseColumn { table, field } => {
                f.write_str("EraseColumn ")?;
                self.name(f, *table)?;
                f.write_char('.')?;
                self.name(f, *field)
            }
            Instruction::ArrayInsert(insert) => {
                f.write_str("ArrayInsert ")?;
                self.path(f, &insert.path)?;
                f.write_str(" = ")?;
                self.payload(f, &insert.value)?;
                write!(f, " (prior_size {})", insert.prior_size)
            }
            Instruction::ArrayMove(mv) => {
                f.write_str("ArrayMove ")?;
                self.path(f, &mv.path)?;
                write!(f, " -> {} (prior_size {})", mv.to, mv.prior_size)
            }
            Instruction::ArrayErase(erase) => {
                f.write_str("ArrayErase ")?;
                self.path(f, &erase.path)?;
                write!(f, " (prior_size {})", erase.prior_size)
            }
            Instruction::Clear(clear) => {
                f.write_str("Clear ")?;
                self.path(f, &clear.path)?;
                write!(f, " ({:?})", clear.collection_type)
            }
            Instruction::SetInsert(set) => {
                f.write_str("SetInsert ")?;
                self.path(f, &set.path)?;
                f.write_char(' ')?;
                self.payload(f, &set.value)
            }
            Instruction::SetErase(set) => {
                f.write_str("SetErase ")?;
                self.path(f, &set.path)?;
                f.write_char(' ')?;
                self.payload(f, &set.value)
            }
        }
    }
}
