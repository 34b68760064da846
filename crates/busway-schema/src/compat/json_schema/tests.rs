//! Unit tests of the JSON Schema rules, one test per rule family.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};

use super::{CANNOT_PROVE, can_read};
use crate::compat::Incompatibility;
use crate::error::SchemaError;
use crate::schema::{Schema, SchemaFormat};

fn violations(reader: Value, writer: Value) -> Vec<Incompatibility> {
    can_read(
        &Schema::json(reader.to_string()),
        &Schema::json(writer.to_string()),
    )
    .unwrap()
}

fn compatible(reader: Value, writer: Value) -> bool {
    violations(reader, writer).is_empty()
}

fn unproven(found: &[Incompatibility]) -> bool {
    !found.is_empty() && found.iter().all(|v| v.message.starts_with(CANNOT_PROVE))
}

fn obj(properties: Value, extra: Value) -> Value {
    let mut schema = json!({ "type": "object", "properties": properties });
    if let (Value::Object(schema), Value::Object(extra)) = (&mut schema, extra) {
        schema.extend(extra);
    }
    schema
}

#[test]
fn integer_widens_to_number_and_type_arrays_are_sets() {
    assert!(compatible(
        json!({"type":"number"}),
        json!({"type":"integer"})
    ));
    let found = violations(json!({"type":"integer"}), json!({"type":"number"}));
    assert_eq!(found.len(), 1);
    assert!(
        found[0].message.contains("non-integer"),
        "{}",
        found[0].message
    );
    assert!(compatible(
        json!({"type":"integer"}),
        json!({"type":"number","multipleOf":1})
    ));
    assert!(compatible(
        json!({"type":["string","null"]}),
        json!({"type":"string"})
    ));
    assert!(!compatible(
        json!({"type":"string"}),
        json!({"type":["string","null"]})
    ));
    assert!(!compatible(
        json!({"type":"string"}),
        json!({"type":"integer"})
    ));
    // A writer without `type` may send anything.
    assert!(!compatible(
        json!({"type":"string"}),
        json!({"minLength":1})
    ));
}

#[test]
fn boolean_schemas() {
    assert!(compatible(json!(true), json!({"type":"string"})));
    assert!(compatible(json!({"type":"string"}), json!(false)));
    assert!(!compatible(json!({"type":"string"}), json!(true)));
    assert!(!compatible(json!(false), json!({"type":"string"})));
}

#[test]
fn closed_content_model() {
    let v1 = obj(
        json!({"a":{"type":"string"}}),
        json!({"additionalProperties":false}),
    );
    let v2 = obj(
        json!({"a":{"type":"string"},"b":{"type":"integer"}}),
        json!({"additionalProperties":false}),
    );
    assert!(
        compatible(v2.clone(), v1.clone()),
        "the closed writer never sends b"
    );
    let found = violations(v1, v2);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, "b");
    assert!(found[0].message.contains("closed"), "{}", found[0].message);
}

#[test]
fn open_content_model() {
    let v1 = obj(json!({"a":{"type":"string"}}), json!({}));
    let v2 = obj(
        json!({"a":{"type":"string"},"b":{"type":"integer"}}),
        json!({}),
    );
    let found = violations(v2.clone(), v1.clone());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "b", "the open writer may send b of any type");
    assert!(compatible(v1, v2), "the open reader accepts b");
}

#[test]
fn partially_open_content_model() {
    let extra = json!({"additionalProperties":{"type":"string"}});
    let v1 = obj(json!({"a":{"type":"string"}}), extra.clone());
    let v2 = obj(
        json!({"a":{"type":"string"},"b":{"type":"string"}}),
        extra.clone(),
    );
    assert!(compatible(v2.clone(), v1.clone()));
    assert!(compatible(v1.clone(), v2));
    let v3 = obj(json!({"a":{"type":"string"},"b":{"type":"integer"}}), extra);
    assert!(!compatible(v3.clone(), v1.clone()));
    assert!(!compatible(v1, v3));
}

#[test]
fn unevaluated_properties_see_all_of_and_refs() {
    let base = json!({"$defs":{"Base":{"properties":{"id":{"type":"integer"}}}}});
    let with = |extra: Value| {
        let mut schema = base.clone();
        if let (Value::Object(s), Value::Object(e)) = (&mut schema, extra) {
            s.extend(e);
        }
        schema
    };
    let v1 = with(json!({"type":"object","allOf":[{"$ref":"#/$defs/Base"}],
        "properties":{"name":{"type":"string"}},"unevaluatedProperties":false}));
    // `id` is evaluated by the referenced schema: not an unknown property.
    assert!(compatible(
        v1.clone(),
        json!({"type":"object",
        "properties":{"id":{"type":"integer"},"name":{"type":"string"}},
        "additionalProperties":false})
    ));
    let found = violations(
        v1,
        json!({"type":"object","properties":{"id":{"type":"integer"},"extra":{"type":"string"}},
            "additionalProperties":false}),
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "extra");
}

#[test]
fn required_added_and_removed() {
    let props = json!({"a":{"type":"string"},"b":{"type":"string"}});
    let none = obj(props.clone(), json!({"additionalProperties":false}));
    let b = obj(
        props,
        json!({"additionalProperties":false,"required":["b"]}),
    );
    let found = violations(b.clone(), none.clone());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, "b");
    assert!(found[0].message.contains("may omit"));
    assert!(compatible(none, b));
}

#[test]
fn enum_and_const() {
    let ab = json!({"enum":["a","b"]});
    let abc = json!({"enum":["a","b","c"]});
    assert!(compatible(abc.clone(), ab.clone()));
    let found = violations(ab.clone(), abc);
    assert_eq!(found.len(), 1);
    assert!(found[0].message.contains("\"c\""), "{}", found[0].message);
    assert!(compatible(ab.clone(), json!({"const":"a"})));
    assert!(!compatible(json!({"const":"a"}), ab));
    assert!(!compatible(
        json!({"enum":[1,2]}),
        json!({"type":"integer"})
    ));
    // Values are validated exactly: 1.0 is the integer 1.
    assert!(compatible(
        json!({"type":"integer","maximum":2}),
        json!({"enum":[1.0, 2]})
    ));
    assert!(compatible(
        json!({"type":"boolean"}),
        json!({"enum":[true]})
    ));
    assert!(!compatible(
        json!({"const":true}),
        json!({"type":"boolean"})
    ));
}

#[test]
fn nested_objects_and_items_report_paths() {
    let doc = |zip: &str, qty: &str| {
        json!({"type":"object","properties":{
            "customer":{"type":"object","properties":{"zip":{"type":zip}}},
            "lines":{"type":"array","items":{"type":"object","properties":{"qty":{"type":qty}}}}
        }})
    };
    assert!(compatible(
        doc("string", "number"),
        doc("string", "integer")
    ));
    let found = violations(doc("integer", "integer"), doc("string", "number"));
    let paths: Vec<&str> = found.iter().map(|v| v.path.as_str()).collect();
    assert_eq!(paths, ["customer.zip", "lines[].qty"], "{found:?}");
}

#[test]
fn references_and_recursion() {
    let tree = |value: &str| {
        json!({"$ref":"#/$defs/Node","$defs":{"Node":{"type":"object",
            "properties":{"value":{"type":value},
                "children":{"type":"array","items":{"$ref":"#/$defs/Node"}}}}}})
    };
    assert!(compatible(tree("number"), tree("integer")));
    let found = violations(tree("integer"), tree("number"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "value");
    // draft-07 `definitions`, and a reference on one side only.
    let inline = json!({"$schema":"http://json-schema.org/draft-07/schema#",
        "type":"object","properties":{"m":{"type":"integer"}}});
    let by_ref = json!({"$schema":"http://json-schema.org/draft-07/schema#",
        "definitions":{"Money":{"type":"number"}},
        "type":"object","properties":{"m":{"$ref":"#/definitions/Money"}}});
    assert!(compatible(by_ref.clone(), inline.clone()));
    assert!(!compatible(inline, by_ref));
}

#[test]
fn string_constraints() {
    let s = |extra: Value| {
        let mut schema = json!({"type":"string"});
        if let (Value::Object(s), Value::Object(e)) = (&mut schema, extra) {
            s.extend(e);
        }
        schema
    };
    assert!(!compatible(
        s(json!({"minLength":3})),
        s(json!({"minLength":1}))
    ));
    assert!(compatible(
        s(json!({"minLength":1})),
        s(json!({"minLength":3}))
    ));
    assert!(!compatible(
        s(json!({"maxLength":5})),
        s(json!({"maxLength":10}))
    ));
    assert!(!compatible(s(json!({"maxLength":5})), s(json!({}))));
    assert!(compatible(
        s(json!({"maxLength":10})),
        s(json!({"maxLength":5}))
    ));
    assert!(compatible(
        s(json!({"pattern":"^a"})),
        s(json!({"pattern":"^a"}))
    ));
    let added = violations(s(json!({"pattern":"^a"})), s(json!({})));
    assert!(!added.is_empty() && !unproven(&added), "{added:?}");
    assert!(unproven(&violations(
        s(json!({"pattern":"^a"})),
        s(json!({"pattern":"^ab"}))
    )));
    assert!(compatible(s(json!({})), s(json!({"pattern":"^a"}))));
    assert!(!compatible(s(json!({"format":"email"})), s(json!({}))));
    assert!(compatible(
        s(json!({"format":"email"})),
        s(json!({"format":"email"}))
    ));
}

#[test]
fn number_bounds() {
    let n = |extra: Value| {
        let mut schema = json!({"type":"number"});
        if let (Value::Object(s), Value::Object(e)) = (&mut schema, extra) {
            s.extend(e);
        }
        schema
    };
    assert!(!compatible(
        n(json!({"minimum":5})),
        n(json!({"minimum":0}))
    ));
    assert!(compatible(n(json!({"minimum":0})), n(json!({"minimum":5}))));
    assert!(!compatible(
        n(json!({"exclusiveMinimum":0})),
        n(json!({"minimum":0}))
    ));
    assert!(compatible(
        n(json!({"minimum":0})),
        n(json!({"exclusiveMinimum":0}))
    ));
    assert!(!compatible(n(json!({"maximum":10})), n(json!({}))));
    assert!(compatible(
        n(json!({"maximum":10})),
        n(json!({"exclusiveMaximum":10}))
    ));
    // Integers: > 0 is >= 1.
    assert!(compatible(
        json!({"type":"integer","minimum":1}),
        json!({"type":"integer","exclusiveMinimum":0})
    ));
    assert!(compatible(
        n(json!({"multipleOf":0.5})),
        n(json!({"multipleOf":1.5}))
    ));
    assert!(!compatible(
        n(json!({"multipleOf":2})),
        n(json!({"multipleOf":3}))
    ));
    assert!(compatible(
        n(json!({"multipleOf":0.5})),
        json!({"type":"integer"})
    ));
    // draft-04 boolean exclusiveMinimum.
    let d4 = |extra: Value| {
        let mut schema =
            json!({"$schema":"http://json-schema.org/draft-04/schema#","type":"number"});
        if let (Value::Object(s), Value::Object(e)) = (&mut schema, extra) {
            s.extend(e);
        }
        schema
    };
    assert!(!compatible(
        d4(json!({"minimum":0,"exclusiveMinimum":true})),
        d4(json!({"minimum":0}))
    ));
}

#[test]
fn arrays() {
    let arr = |extra: Value| {
        let mut schema = json!({"type":"array","items":{"type":"integer"}});
        if let (Value::Object(s), Value::Object(e)) = (&mut schema, extra) {
            s.extend(e);
        }
        schema
    };
    assert!(!compatible(arr(json!({"minItems":1})), arr(json!({}))));
    assert!(!compatible(
        arr(json!({"maxItems":3})),
        arr(json!({"maxItems":4}))
    ));
    assert!(!compatible(
        arr(json!({"uniqueItems":true})),
        arr(json!({}))
    ));
    assert!(compatible(
        arr(json!({})),
        arr(json!({"uniqueItems":true,"minItems":2}))
    ));
    let tuple7 = |second: &str| {
        json!({"$schema":"http://json-schema.org/draft-07/schema#","type":"array",
            "items":[{"type":"string"},{"type":second}],"additionalItems":false})
    };
    assert!(compatible(tuple7("number"), tuple7("integer")));
    let found = violations(tuple7("integer"), tuple7("number"));
    assert_eq!(found[0].path, "[1]");
    let tuple2020 = json!({"type":"array","prefixItems":[{"type":"string"},{"type":"number"}]});
    assert!(compatible(tuple2020.clone(), tuple7("integer")));
    // The 2020-12 tuple allows more items of any type; the draft-07 one allows none.
    assert!(!compatible(tuple7("number"), tuple2020));
}

#[test]
fn any_of_and_one_of() {
    let w = json!({"anyOf":[{"type":"string"},{"type":"integer"}]});
    assert!(compatible(
        json!({"anyOf":[{"type":"string"},{"type":"number"},{"type":"null"}]}),
        w.clone()
    ));
    assert!(!compatible(json!({"anyOf":[{"type":"string"}]}), w));
    // A writer type array spread over reader branches.
    assert!(compatible(
        json!({"anyOf":[{"type":"string"},{"type":"integer"}]}),
        json!({"type":["string","integer"]})
    ));
    // oneOf with a discriminator: each writer branch lands in exactly one reader branch.
    let card = json!({"type":"object","properties":{"kind":{"const":"card"},"number":{"type":"string"}},"required":["kind"]});
    let iban = json!({"type":"object","properties":{"kind":{"const":"iban"},"iban":{"type":"string"}},"required":["kind"]});
    let cash = json!({"type":"object","properties":{"kind":{"const":"cash"}},"required":["kind"]});
    let v1 = json!({"oneOf":[card, iban]});
    let v2 = json!({"oneOf":[card, iban, cash]});
    assert!(compatible(v2.clone(), v1.clone()));
    assert!(!compatible(v1, v2));
    // Overlapping reader branches cannot be proven exclusive.
    let overlapping = json!({"oneOf":[{"type":"number"},{"type":"integer"}]});
    assert!(unproven(&violations(
        overlapping,
        json!({"type":"integer"})
    )));
}

#[test]
fn not_and_conditionals() {
    assert!(compatible(
        json!({"not":{"type":"null"}}),
        json!({"type":"string"})
    ));
    assert!(unproven(&violations(
        json!({"not":{"type":"string","maxLength":2}}),
        json!({"type":"string"})
    )));
    let reader = json!({"type":"object","properties":{"kind":{"type":"string"}},
        "if":{"properties":{"kind":{"const":"card"}},"required":["kind"]},
        "then":{"required":["number"]}});
    let writer_card = json!({"type":"object","properties":{"kind":{"const":"card"},"number":{"type":"string"}},
        "required":["kind","number"]});
    let writer_cash =
        json!({"type":"object","properties":{"kind":{"const":"cash"}},"required":["kind"]});
    let writer_card_no_number =
        json!({"type":"object","properties":{"kind":{"const":"card"}},"required":["kind"]});
    assert!(compatible(reader.clone(), writer_card));
    assert!(compatible(reader.clone(), writer_cash));
    assert!(!compatible(reader, writer_card_no_number));
}

#[test]
fn unguarded_recursion_is_not_assumed_to_hold() {
    // The reader's first branch refers back to the reader without consuming anything; a
    // naive coinductive proof would "prove" that it accepts integers.
    let reader = json!({"anyOf":[{"$ref":"#"},{"type":"string"}]});
    assert!(!compatible(reader, json!({"type":"integer"})));
}

#[test]
fn pattern_properties_pair_with_every_reader_pattern() {
    // Keys matching the writer's `^x` may also match the reader's `^xy`.
    let writer = json!({"type":"object","patternProperties":{"^x":{"type":"string"}},
        "additionalProperties":false});
    let reader = json!({"type":"object","patternProperties":{"^x":{"type":"string"},
        "^xy":{"type":"string","maxLength":2}}});
    assert!(!compatible(reader, writer.clone()));
    let same = json!({"type":"object","patternProperties":{"^x":{"type":"string"}}});
    assert!(compatible(same, writer));
}

#[test]
fn property_disjointness_needs_objects() {
    // `required` holds for every non-object, so a writer that may send strings is not
    // disjoint from a `not: {required: [a]}`.
    let reader = json!({"not":{"required":["a"]}});
    let closed = json!({"type":"object","properties":{"b":{}},"additionalProperties":false});
    assert!(compatible(reader.clone(), closed));
    let maybe_string =
        json!({"type":["object","string"],"properties":{"b":{}},"additionalProperties":false});
    assert!(!compatible(reader, maybe_string));
}

#[test]
fn external_references_cannot_be_proven() {
    let found = violations(
        json!({"$ref":"https://example.com/order.json"}),
        json!({"type":"object"}),
    );
    assert!(unproven(&found), "{found:?}");
    // On the writer side they only widen the writer: a reader accepting all still passes.
    assert!(compatible(
        json!({}),
        json!({"$ref":"https://example.com/order.json"})
    ));
}

#[test]
fn invalid_schemas_are_errors() {
    let err = |reader: &str| can_read(&Schema::json(reader), &Schema::json("{}")).unwrap_err();
    for bad in [
        "{not json",
        r#"{"type":"invalid"}"#,
        r#"{"minLength":-1}"#,
        r##"{"$ref":"#/$defs/Missing"}"##,
        r#"{"pattern":"(unclosed"}"#,
        r#"{"$schema":"https://example.com/my-meta"}"#,
    ] {
        assert!(
            matches!(
                err(bad),
                SchemaError::InvalidSchema {
                    format: SchemaFormat::Json,
                    ..
                }
            ),
            "{bad}"
        );
    }
}
