//! What the `compat_*` tests share: the shape of an evolution row, and the check every row
//! gets under every compatibility mode. Each format's file adds its own checks on the reports.

#![allow(dead_code)]

use busway_schema::{CompatibilityMode, CompatibilityReport, Schema, SchemaError, compat};

/// A compatible verdict in [`Evolution::expect`].
pub const OK: bool = true;
/// An incompatible verdict in [`Evolution::expect`].
pub const NO: bool = false;

/// An evolution from `before` (version 1) to `after` (the candidate), with the verdict of every
/// mode; `S` is however the format's rows spell a schema.
pub struct Evolution<S> {
    /// What the row shows, for failure messages.
    pub name: &'static str,
    /// Version 1.
    pub before: S,
    /// The candidate.
    pub after: S,
    /// Verdict per mode, in the order of `CompatibilityMode::ALL`.
    pub expect: [bool; 7],
    /// A path every failing mode must report.
    pub path: &'static str,
}

impl<S> Evolution<S> {
    /// Checks `after` against `before` (made into schemas by `schema`) under every mode: each
    /// verdict is the expected one, and each failing mode reports [`path`](Self::path). Returns
    /// every mode's report, for the checks particular to a format.
    pub fn check(
        &self,
        schema: impl Fn(&S) -> Schema,
    ) -> Vec<(CompatibilityMode, CompatibilityReport)> {
        let before = schema(&self.before);
        let after = schema(&self.after);
        let mut reports = Vec::new();
        for (mode, expected) in CompatibilityMode::ALL.into_iter().zip(self.expect) {
            let report = compat::check(mode, &after, &[(1, before.clone())]).unwrap();
            assert_eq!(
                report.is_compatible(),
                expected,
                "{} under {mode}: {:?}",
                self.name,
                report.violations
            );
            if !expected && !self.path.is_empty() {
                assert!(
                    report.violations.iter().any(|v| v.path == self.path),
                    "{} under {mode}: expected a violation at {}, got {:?}",
                    self.name,
                    self.path,
                    report.violations
                );
            }
            reports.push((mode, report));
        }
        reports
    }
}

/// Checks `candidate` against a whole `history` under every mode, each verdict being the one
/// `expect` gives (in the order of `CompatibilityMode::ALL`). Returns every mode's report.
pub fn check_history(
    candidate: &Schema,
    history: &[(u32, Schema)],
    expect: [bool; 7],
) -> Vec<(CompatibilityMode, CompatibilityReport)> {
    let mut reports = Vec::new();
    for (mode, expected) in CompatibilityMode::ALL.into_iter().zip(expect) {
        let report = compat::check(mode, candidate, history).unwrap();
        assert_eq!(
            report.is_compatible(),
            expected,
            "{mode}: {:?}",
            report.violations
        );
        reports.push((mode, report));
    }
    reports
}

/// Checks that each candidate in `invalid` (made into a schema by `schema`) is refused as an
/// invalid schema when checked under `mode` against the valid `valid`.
pub fn assert_invalid(
    mode: CompatibilityMode,
    schema: impl Fn(&str) -> Schema,
    invalid: &[&str],
    valid: &Schema,
) {
    for invalid in invalid {
        let result = compat::check(mode, &schema(invalid), &[(1, valid.clone())]);
        assert!(
            matches!(result, Err(SchemaError::InvalidSchema { .. })),
            "{invalid}: {result:?}"
        );
    }
}
