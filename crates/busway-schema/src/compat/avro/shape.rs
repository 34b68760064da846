//! What the checker compares: each schema reduced to its shape, with named types resolved.

use std::collections::HashMap;

use apache_avro::Schema as AvroSchema;
use apache_avro::schema::{
    Alias, DecimalSchema, EnumSchema, FixedSchema, InnerDecimalSchema, Name, RecordSchema,
    UuidSchema,
};

/// Every named type of a schema, by full name and by the full names of its aliases.
pub(super) fn named_types(schema: &AvroSchema) -> HashMap<Name, &AvroSchema> {
    fn walk<'a>(schema: &'a AvroSchema, names: &mut HashMap<Name, &'a AvroSchema>) {
        let mut register = |name: &Name, aliases: &Option<Vec<Alias>>| {
            names.entry(name.clone()).or_insert(schema);
            for alias in aliases.iter().flatten() {
                names
                    .entry(alias.fully_qualified_name(name.namespace()).into_owned())
                    .or_insert(schema);
            }
        };
        match schema {
            AvroSchema::Record(record) => {
                register(&record.name, &record.aliases);
                for field in &record.fields {
                    walk(&field.schema, names);
                }
            }
            AvroSchema::Enum(e) => register(&e.name, &e.aliases),
            AvroSchema::Fixed(f)
            | AvroSchema::Duration(f)
            | AvroSchema::Uuid(UuidSchema::Fixed(f))
            | AvroSchema::Decimal(DecimalSchema {
                inner: InnerDecimalSchema::Fixed(f),
                ..
            }) => register(&f.name, &f.aliases),
            AvroSchema::Array(array) => walk(&array.items, names),
            AvroSchema::Map(map) => walk(&map.types, names),
            AvroSchema::Union(union) => {
                for variant in union.variants() {
                    walk(variant, names);
                }
            }
            _ => {}
        }
    }
    let mut names = HashMap::new();
    walk(schema, &mut names);
    names
}

/// What a schema is on the wire, logical types reduced to their underlying types.
#[derive(Clone, Copy)]
pub(super) enum Shape<'a> {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Fixed(&'a FixedSchema),
    Enum(&'a EnumSchema),
    Record(&'a RecordSchema),
    Array(&'a AvroSchema),
    Map(&'a AvroSchema),
    Union(&'a [AvroSchema]),
    /// A reference to a named type, to be looked up.
    Ref(&'a Name),
}

impl Shape<'_> {
    pub(super) fn describe(&self) -> String {
        match self {
            Self::Null => "null".into(),
            Self::Boolean => "boolean".into(),
            Self::Int => "int".into(),
            Self::Long => "long".into(),
            Self::Float => "float".into(),
            Self::Double => "double".into(),
            Self::Bytes => "bytes".into(),
            Self::String => "string".into(),
            Self::Fixed(f) => format!("fixed `{}` (size {})", f.name.name(), f.size),
            Self::Enum(e) => format!("enum `{}`", e.name.name()),
            Self::Record(r) => format!("record `{}`", r.name.name()),
            Self::Array(_) => "array".into(),
            Self::Map(_) => "map".into(),
            Self::Union(_) => "union".into(),
            Self::Ref(name) => format!("`{}`", name.name()),
        }
    }
}

/// The decimal annotation of a schema, as `(precision, scale)`.
pub(super) fn decimal(schema: &AvroSchema) -> Option<(usize, usize)> {
    match schema {
        AvroSchema::Decimal(d) => Some((d.precision, d.scale)),
        _ => None,
    }
}

pub(super) fn shape(schema: &AvroSchema) -> Shape<'_> {
    match schema {
        AvroSchema::Null => Shape::Null,
        AvroSchema::Boolean => Shape::Boolean,
        AvroSchema::Int | AvroSchema::Date | AvroSchema::TimeMillis => Shape::Int,
        AvroSchema::Long
        | AvroSchema::TimeMicros
        | AvroSchema::TimestampMillis
        | AvroSchema::TimestampMicros
        | AvroSchema::TimestampNanos
        | AvroSchema::LocalTimestampMillis
        | AvroSchema::LocalTimestampMicros
        | AvroSchema::LocalTimestampNanos => Shape::Long,
        AvroSchema::Float => Shape::Float,
        AvroSchema::Double => Shape::Double,
        AvroSchema::Bytes
        | AvroSchema::BigDecimal
        | AvroSchema::Uuid(UuidSchema::Bytes)
        | AvroSchema::Decimal(DecimalSchema {
            inner: InnerDecimalSchema::Bytes,
            ..
        }) => Shape::Bytes,
        AvroSchema::String | AvroSchema::Uuid(UuidSchema::String) => Shape::String,
        AvroSchema::Fixed(f)
        | AvroSchema::Duration(f)
        | AvroSchema::Uuid(UuidSchema::Fixed(f))
        | AvroSchema::Decimal(DecimalSchema {
            inner: InnerDecimalSchema::Fixed(f),
            ..
        }) => Shape::Fixed(f),
        AvroSchema::Enum(e) => Shape::Enum(e),
        AvroSchema::Record(r) => Shape::Record(r),
        AvroSchema::Array(a) => Shape::Array(&a.items),
        AvroSchema::Map(m) => Shape::Map(&m.types),
        AvroSchema::Union(u) => Shape::Union(u.variants()),
        AvroSchema::Ref { name } => Shape::Ref(name),
    }
}

/// Whether a reader's named type accepts a writer's name: same unqualified name, or a reader
/// alias with the writer's unqualified name.
pub(super) fn names_match(
    writer: &Name,
    reader: &Name,
    reader_aliases: &Option<Vec<Alias>>,
) -> bool {
    writer.name() == reader.name()
        || reader_aliases
            .iter()
            .flatten()
            .any(|alias| alias.name() == writer.name())
}
