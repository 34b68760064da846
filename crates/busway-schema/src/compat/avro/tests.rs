//! Unit tests of the Avro resolution rules, cross-checked against apache-avro.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};

use super::*;

fn violations(reader: &str, writer: &str) -> Vec<Incompatibility> {
    can_read(&Schema::avro(reader), &Schema::avro(writer)).unwrap()
}

fn compatible(reader: &str, writer: &str) -> bool {
    violations(reader, writer).is_empty()
}

fn record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"Order","namespace":"shop","fields":[{fields}]}}"#)
}

#[test]
fn promotions_follow_the_specification() {
    let all = [
        "null", "boolean", "int", "long", "float", "double", "bytes", "string",
    ];
    // (writer, reader) pairs the specification allows besides identity.
    let promotions = [
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    ];
    for writer in all {
        for reader in all {
            let expected = writer == reader || promotions.contains(&(writer, reader));
            let got = compatible(&format!(r#""{reader}""#), &format!(r#""{writer}""#));
            assert_eq!(got, expected, "writer {writer}, reader {reader}");
        }
    }
}

#[test]
fn promotion_inside_a_record_reports_the_field_path() {
    let found = violations(
        &record(r#"{"name":"amount","type":"int"}"#),
        &record(r#"{"name":"amount","type":"long"}"#),
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, "Order.amount");
    assert!(found[0].message.contains("long"), "{}", found[0].message);
}

#[test]
fn reader_field_without_default_must_be_written() {
    let writer = record(r#"{"name":"id","type":"long"}"#);
    let with_default =
        record(r#"{"name":"id","type":"long"},{"name":"note","type":"string","default":""}"#);
    let without_default = record(r#"{"name":"id","type":"long"},{"name":"note","type":"string"}"#);
    assert!(compatible(&with_default, &writer));
    let found = violations(&without_default, &writer);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, "Order.note");
    // Writer fields unknown to the reader are skipped.
    assert!(compatible(&writer, &without_default));
}

#[test]
fn reader_field_alias_finds_the_writer_field() {
    let writer = record(r#"{"name":"amount","type":"long"}"#);
    let renamed = record(r#"{"name":"total","type":"long","aliases":["amount"]}"#);
    let renamed_without_alias = record(r#"{"name":"total","type":"long"}"#);
    assert!(compatible(&renamed, &writer));
    assert!(!compatible(&renamed_without_alias, &writer));
    // Writer-side aliases do not count: an old reader does not know `total`.
    let writer_alias = record(r#"{"name":"total","type":"long","aliases":["amount"]}"#);
    assert!(!compatible(&writer, &writer_alias));
}

#[test]
fn record_names_match_unqualified_or_through_reader_aliases() {
    let writer = r#"{"type":"record","name":"Order","namespace":"a","fields":[]}"#;
    let moved = r#"{"type":"record","name":"Order","namespace":"b","fields":[]}"#;
    let renamed = r#"{"type":"record","name":"Purchase","namespace":"a","fields":[]}"#;
    let aliased =
        r#"{"type":"record","name":"Purchase","namespace":"a","aliases":["Order"],"fields":[]}"#;
    assert!(
        compatible(moved, writer),
        "only unqualified names are compared"
    );
    assert!(!compatible(renamed, writer));
    assert!(compatible(aliased, writer));
    // apache-avro ignores record aliases; we follow the specification.
    let w = AvroSchema::parse_str(writer).unwrap();
    let r = AvroSchema::parse_str(aliased).unwrap();
    assert!(SchemaCompatibility::can_read(&w, &r).is_err());
}

#[test]
fn enum_symbols_and_reader_default() {
    let enum_of = |symbols: &str, default: &str| {
        format!(r#"{{"type":"enum","name":"Status","symbols":[{symbols}]{default}}}"#)
    };
    let ab = enum_of(r#""A","B""#, "");
    let abc = enum_of(r#""A","B","C""#, "");
    let ab_default = enum_of(r#""A","B""#, r#","default":"A""#);
    assert!(compatible(&abc, &ab), "a new reader symbol is fine");
    let found = violations(&ab, &abc);
    assert_eq!(found.len(), 1);
    assert!(found[0].message.contains("`C`"), "{}", found[0].message);
    assert!(
        compatible(&ab_default, &abc),
        "the reader's default stands in"
    );
    // apache-avro calls the partial overlap compatible-ish; a verdict over all data cannot.
    let w = AvroSchema::parse_str(&abc).unwrap();
    let r = AvroSchema::parse_str(&ab).unwrap();
    assert_eq!(
        SchemaCompatibility::can_read(&w, &r),
        Ok(Compatibility::Partial)
    );
}

#[test]
fn unions() {
    // Reader union containing the writer's type, or one it promotes to.
    assert!(compatible(r#"["null","long"]"#, r#""int""#));
    assert!(!compatible(r#"["null","string"]"#, r#""int""#));
    // Writer union: every branch must be readable.
    assert!(compatible(r#""long""#, r#"["int","long"]"#));
    assert!(!compatible(r#""long""#, r#"["null","long"]"#));
    // Both unions: adding a branch to the reader is fine, removing one is not.
    assert!(compatible(
        r#"["null","string","long"]"#,
        r#"["null","string"]"#
    ));
    let found = violations(r#"["null","string"]"#, r#"["null","string","long"]"#);
    assert_eq!(found.len(), 1);
    assert!(found[0].message.contains("long"), "{}", found[0].message);
    // Making a field optional (T -> [null, T]) is backward compatible, not forward.
    let required = record(r#"{"name":"note","type":"string"}"#);
    let optional = record(r#"{"name":"note","type":["null","string"],"default":null}"#);
    assert!(compatible(&optional, &required));
    assert!(!compatible(&required, &optional));
}

#[test]
fn union_branches_resolve_recursively() {
    let v1 = r#"["null",{"type":"record","name":"Card","fields":[{"name":"n","type":"int"}]}]"#;
    let v2 = r#"["null",{"type":"record","name":"Card","fields":[{"name":"n","type":"long"}]}]"#;
    assert!(compatible(v2, v1));
    let found = violations(v1, v2);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, "Card.n");
}

#[test]
fn fixed_name_and_size() {
    let fixed =
        |name: &str, size: u32| format!(r#"{{"type":"fixed","name":"{name}","size":{size}}}"#);
    assert!(compatible(&fixed("Hash", 16), &fixed("Hash", 16)));
    assert!(!compatible(&fixed("Hash", 32), &fixed("Hash", 16)));
    assert!(!compatible(&fixed("Digest", 16), &fixed("Hash", 16)));
}

#[test]
fn arrays_and_maps_by_item_type() {
    assert!(compatible(
        r#"{"type":"array","items":"long"}"#,
        r#"{"type":"array","items":"int"}"#
    ));
    let found = violations(
        &record(r#"{"name":"lines","type":{"type":"array","items":"int"}}"#),
        &record(r#"{"name":"lines","type":{"type":"array","items":"string"}}"#),
    );
    assert_eq!(found[0].path, "Order.lines[]");
    let found = violations(
        r#"{"type":"map","values":"int"}"#,
        r#"{"type":"map","values":"double"}"#,
    );
    assert_eq!(found[0].path, "{}");
    assert!(!compatible(
        r#"{"type":"map","values":"int"}"#,
        r#"{"type":"array","items":"int"}"#
    ));
}

#[test]
fn decimals_need_equal_precision_and_scale() {
    let dec = |p: u32, s: u32| {
        format!(r#"{{"type":"bytes","logicalType":"decimal","precision":{p},"scale":{s}}}"#)
    };
    assert!(compatible(&dec(10, 2), &dec(10, 2)));
    assert!(!compatible(&dec(12, 2), &dec(10, 2)));
    assert!(!compatible(&dec(10, 3), &dec(10, 2)));
    // Logical types otherwise resolve by their underlying type.
    assert!(compatible(
        r#"{"type":"long","logicalType":"timestamp-millis"}"#,
        r#"{"type":"int","logicalType":"date"}"#
    ));
}

#[test]
fn recursive_records_terminate_and_are_compared() {
    let list = |value: &str| {
        format!(
            r#"{{"type":"record","name":"Node","fields":[
                {{"name":"value","type":"{value}"}},
                {{"name":"next","type":["null","Node"],"default":null}}]}}"#
        )
    };
    assert!(compatible(&list("long"), &list("int")));
    let found = violations(&list("int"), &list("long"));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, "Node.value");
}

#[test]
fn named_reference_compared_with_inline_definition() {
    // The writer defines Money first and refers to it by name; the reader defines it inline
    // in the second field. Both must be followed to their definitions.
    let writer = record(
        r#"{"name":"price","type":{"type":"record","name":"Money","fields":[{"name":"cents","type":"int"}]}},
           {"name":"tax","type":"Money"}"#,
    );
    let reader = record(
        r#"{"name":"price","type":"long"},
           {"name":"tax","type":{"type":"record","name":"Money","fields":[{"name":"cents","type":"long"}]}}"#,
    );
    let found = violations(&reader, &writer);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "Order.price");
}

#[test]
fn invalid_schema_is_an_error() {
    let err = can_read(&Schema::avro("{not json"), &Schema::avro(r#""int""#)).unwrap_err();
    assert!(matches!(
        err,
        SchemaError::InvalidSchema {
            format: SchemaFormat::Avro,
            ..
        }
    ));
    let err = can_read(
        &Schema::avro(r#""int""#),
        &Schema::avro(r#"{"type":"record","name":"X","fields":[{"name":"a","type":"Nope"}]}"#),
    )
    .unwrap_err();
    assert!(matches!(err, SchemaError::InvalidSchema { .. }));
}

/// Where aliases, partial unions/enums and cross-schema references play no part, our verdict
/// is apache-avro's: a regression guard for both.
#[test]
fn agrees_with_apache_avro_where_it_follows_the_specification() {
    let schemas = [
        r#""int""#,
        r#""long""#,
        r#""double""#,
        r#""string""#,
        r#""bytes""#,
        r#"{"type":"array","items":"int"}"#,
        r#"{"type":"array","items":"long"}"#,
        r#"{"type":"map","values":"string"}"#,
        r#"{"type":"fixed","name":"F","size":4}"#,
        r#"{"type":"fixed","name":"F","size":8}"#,
        r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#,
        r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}"#,
        r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"string","default":"x"}]}"#,
        r#"{"type":"record","name":"R","fields":[{"name":"b","type":"string"}]}"#,
        r#"{"type":"enum","name":"E","symbols":["A","B"]}"#,
        r#"{"type":"enum","name":"E","symbols":["A","B","C"],"default":"A"}"#,
    ];
    for writer in schemas {
        for reader in schemas {
            let ours = compatible(reader, writer);
            let w = AvroSchema::parse_str(writer).unwrap();
            let r = AvroSchema::parse_str(reader).unwrap();
            let theirs = SchemaCompatibility::can_read(&w, &r) == Ok(Compatibility::Full);
            assert_eq!(ours, theirs, "writer {writer}, reader {reader}");
        }
    }
}
