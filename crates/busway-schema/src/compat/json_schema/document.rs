//! The two parsed documents: draft detection, meta-schema validation and `$ref` resolution.

use serde_json::{Value, json};

use crate::error::SchemaError;
use crate::schema::{Schema, SchemaFormat};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Draft {
    D4,
    D6,
    D7,
    D2019,
    D2020,
}

impl Draft {
    fn detect(root: &Value) -> Result<Self, String> {
        let Some(uri) = root.get("$schema") else {
            return Ok(Self::D2020);
        };
        let uri = uri.as_str().ok_or("`$schema` must be a string")?;
        let bare = uri
            .trim_end_matches('#')
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        match bare {
            "json-schema.org/draft-04/schema" => Ok(Self::D4),
            "json-schema.org/draft-06/schema" => Ok(Self::D6),
            "json-schema.org/draft-07/schema" => Ok(Self::D7),
            "json-schema.org/draft/2019-09/schema" => Ok(Self::D2019),
            "json-schema.org/draft/2020-12/schema" => Ok(Self::D2020),
            _ => Err(format!(
                "unsupported `$schema` `{uri}` (supported: drafts 4, 6, 7, 2019-09 and 2020-12)"
            )),
        }
    }

    pub(super) fn library(self) -> jsonschema::Draft {
        match self {
            Self::D4 => jsonschema::Draft::Draft4,
            Self::D6 => jsonschema::Draft::Draft6,
            Self::D7 => jsonschema::Draft::Draft7,
            Self::D2019 => jsonschema::Draft::Draft201909,
            Self::D2020 => jsonschema::Draft::Draft202012,
        }
    }
}

/// A parsed, validated JSON Schema document.
pub(super) struct Doc {
    pub(super) root: Value,
    pub(super) draft: Draft,
    /// The root's `$id`, so that references spelled with it are recognised as local.
    pub(super) id: Option<String>,
}

pub(super) enum Target<'a> {
    Found(&'a Value),
    /// A reference to another document, or one we do not follow.
    Opaque,
    /// A local reference that resolves to nothing.
    Missing,
}

impl Doc {
    pub(super) fn parse(schema: &Schema) -> Result<Self, SchemaError> {
        let invalid = |reason: String| SchemaError::InvalidSchema {
            format: SchemaFormat::Json,
            reason,
        };
        let root: Value = serde_json::from_str(schema.definition())
            .map_err(|e| invalid(format!("not JSON: {e}")))?;
        let draft = Draft::detect(&root).map_err(invalid)?;
        jsonschema::meta::validate(&root).map_err(|e| invalid(e.to_string()))?;
        let id = root
            .get(if draft == Draft::D4 { "id" } else { "$id" })
            .and_then(Value::as_str)
            .map(|id| id.trim_end_matches('#').to_owned());
        let doc = Self { root, draft, id };
        doc.check_references_and_patterns().map_err(invalid)?;
        Ok(doc)
    }

    /// Every local `$ref` must resolve and every regular expression must compile.
    fn check_references_and_patterns(&self) -> Result<(), String> {
        fn walk(doc: &Doc, value: &Value) -> Result<(), String> {
            match value {
                Value::Object(map) => {
                    for (key, child) in map {
                        match (key.as_str(), child) {
                            // Data, not schemas.
                            ("enum" | "const" | "default" | "examples", _) => continue,
                            ("$ref", Value::String(reference)) => {
                                if let Target::Missing = doc.resolve(reference) {
                                    return Err(format!("`$ref` `{reference}` does not resolve"));
                                }
                            }
                            ("pattern", Value::String(pattern)) => compile_pattern(pattern)?,
                            ("patternProperties", Value::Object(patterns)) => {
                                for pattern in patterns.keys() {
                                    compile_pattern(pattern)?;
                                }
                            }
                            _ => {}
                        }
                        walk(doc, child)?;
                    }
                    Ok(())
                }
                Value::Array(items) => items.iter().try_for_each(|item| walk(doc, item)),
                _ => Ok(()),
            }
        }
        walk(self, &self.root)
    }

    pub(super) fn resolve(&self, reference: &str) -> Target<'_> {
        let fragment = if let Some(fragment) = reference.strip_prefix('#') {
            fragment
        } else if let Some(id) = &self.id
            && let Some(rest) = reference.strip_prefix(id.as_str())
            && (rest.is_empty() || rest.starts_with('#'))
        {
            rest.trim_start_matches('#')
        } else {
            return Target::Opaque;
        };
        let fragment = percent_decode(fragment);
        let found = if fragment.is_empty() {
            Some(&self.root)
        } else if fragment.starts_with('/') {
            self.root.pointer(&fragment)
        } else {
            find_anchor(&self.root, &fragment, self.draft)
        };
        found.map_or(Target::Missing, Target::Found)
    }
}

fn compile_pattern(pattern: &str) -> Result<(), String> {
    jsonschema::options()
        .build(&json!({ "pattern": pattern }))
        .map(drop)
        .map_err(|e| format!("invalid regular expression `{pattern}`: {e}"))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn find_anchor<'a>(value: &'a Value, name: &str, draft: Draft) -> Option<&'a Value> {
    match value {
        Value::Object(map) => {
            let hit = if draft >= Draft::D2019 {
                map.get("$anchor").and_then(Value::as_str) == Some(name)
                    || map.get("$dynamicAnchor").and_then(Value::as_str) == Some(name)
            } else {
                let key = if draft == Draft::D4 { "id" } else { "$id" };
                map.get(key)
                    .and_then(Value::as_str)
                    .and_then(|id| id.strip_prefix('#'))
                    == Some(name)
            };
            if hit {
                return Some(value);
            }
            map.iter()
                .filter(|(key, _)| {
                    !matches!(key.as_str(), "enum" | "const" | "default" | "examples")
                })
                .find_map(|(_, child)| find_anchor(child, name, draft))
        }
        Value::Array(items) => items.iter().find_map(|item| find_anchor(item, name, draft)),
        _ => None,
    }
}
