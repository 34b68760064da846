//! String and number constraints: lengths, `pattern`, `format`, bounds and `multipleOf`.

use serde_json::{Map, Value};

use super::document::Draft;
use super::{Cx, cannot};
use crate::compat::Incompatibility;

pub(super) fn num(base: &Map<String, Value>, key: &str) -> Option<f64> {
    base.get(key).and_then(Value::as_f64)
}

/// A numeric bound: value and whether it is exclusive.
type Bound = (f64, bool);

fn lower_bound(base: &Map<String, Value>, draft: Draft) -> Option<Bound> {
    bound(base, draft, "minimum", "exclusiveMinimum", f64::gt)
}

fn upper_bound(base: &Map<String, Value>, draft: Draft) -> Option<Bound> {
    bound(base, draft, "maximum", "exclusiveMaximum", f64::lt)
}

/// `tighter(a, b)`: whether bound value `a` admits fewer numbers than `b`.
fn bound(
    base: &Map<String, Value>,
    draft: Draft,
    inclusive: &str,
    exclusive: &str,
    tighter: fn(&f64, &f64) -> bool,
) -> Option<Bound> {
    let plain = num(base, inclusive);
    if draft == Draft::D4 {
        let excl = base
            .get(exclusive)
            .and_then(Value::as_bool)
            .unwrap_or(false);
        return plain.map(|v| (v, excl));
    }
    match (plain, num(base, exclusive)) {
        (None, None) => None,
        (Some(p), None) => Some((p, false)),
        (None, Some(e)) => Some((e, true)),
        (Some(p), Some(e)) => Some(if tighter(&p, &e) {
            (p, false)
        } else {
            (e, true)
        }),
    }
}

/// Whether reader bound `r` admits every number writer bound `w` admits. `lower` says which
/// side of the range the bounds are on.
fn bound_admits(r: Option<Bound>, w: Option<Bound>, lower: bool) -> bool {
    match (r, w) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some((r, r_excl)), Some((w, w_excl))) => {
            let beyond = if lower { r < w } else { r > w };
            beyond || (r == w && (!r_excl || w_excl))
        }
    }
}

/// A bound of an integer-only writer, rounded to the integers it admits (then inclusive).
fn integral(bound: Option<Bound>, lower: bool) -> Option<Bound> {
    bound.map(|(v, excl)| {
        let v = match (lower, excl) {
            (true, true) => v.floor() + 1.0,
            (true, false) => v.ceil(),
            (false, true) => v.ceil() - 1.0,
            (false, false) => v.floor(),
        };
        (v, false)
    })
}

pub(super) fn is_integral(x: f64) -> bool {
    x.is_finite() && (x - x.round()).abs() < 1e-9
}

impl<'a> Cx<'a> {
    pub(super) fn compare_strings(
        &mut self,
        w: &Map<String, Value>,
        r: &Map<String, Value>,
        path: &str,
        found: &mut Vec<Incompatibility>,
    ) {
        let (w_min, r_min) = (
            num(w, "minLength").unwrap_or(0.0),
            num(r, "minLength").unwrap_or(0.0),
        );
        if r_min > w_min {
            found.push(Incompatibility::new(
                path,
                format!(
                    "the reader requires at least {r_min} characters; the writer allows {w_min}"
                ),
            ));
        }
        if let Some(r_max) = num(r, "maxLength")
            && num(w, "maxLength").is_none_or(|w_max| w_max > r_max)
        {
            found.push(Incompatibility::new(
                path,
                format!(
                    "the reader allows at most {r_max} characters; the writer allows {}",
                    num(w, "maxLength").map_or("any number".into(), |m| m.to_string())
                ),
            ));
        }
        if let Some(r_pattern) = r.get("pattern") {
            match w.get("pattern") {
                Some(w_pattern) if w_pattern == r_pattern => {}
                Some(w_pattern) => found.push(cannot(
                    path,
                    format!("pattern changed from {w_pattern} to {r_pattern}"),
                )),
                None => found.push(Incompatibility::new(
                    path,
                    format!("the reader requires pattern {r_pattern}, which the writer does not"),
                )),
            }
        }
        if let Some(r_format) = r.get("format")
            && w.get("format") != Some(r_format)
        {
            found.push(Incompatibility::new(
                path,
                format!(
                    "the reader requires format {r_format}; the writer {}",
                    w.get("format")
                        .map_or("has none".into(), |f| format!("has {f}"))
                ),
            ));
        }
    }

    pub(super) fn compare_numbers(
        &mut self,
        w: &Map<String, Value>,
        r: &Map<String, Value>,
        integers_only: bool,
        path: &str,
        found: &mut Vec<Incompatibility>,
    ) {
        let (wd, rd) = (self.writer.draft, self.reader.draft);
        let (mut w_low, mut w_high) = (lower_bound(w, wd), upper_bound(w, wd));
        if integers_only {
            w_low = integral(w_low, true);
            w_high = integral(w_high, false);
        }
        let (r_low, r_high) = (lower_bound(r, rd), upper_bound(r, rd));
        let show = |b: Option<Bound>, lower: bool| match b {
            None => "no bound".to_owned(),
            Some((v, true)) => format!("{} {v}", if lower { ">" } else { "<" }),
            Some((v, false)) => format!("{} {v}", if lower { ">=" } else { "<=" }),
        };
        if !bound_admits(r_low, w_low, true) {
            found.push(Incompatibility::new(
                path,
                format!(
                    "the reader's lower bound ({}) is tighter than the writer's ({})",
                    show(r_low, true),
                    show(w_low, true)
                ),
            ));
        }
        if !bound_admits(r_high, w_high, false) {
            found.push(Incompatibility::new(
                path,
                format!(
                    "the reader's upper bound ({}) is tighter than the writer's ({})",
                    show(r_high, false),
                    show(w_high, false)
                ),
            ));
        }
        if let Some(r_multiple) = num(r, "multipleOf") {
            let divides = |x: f64| r_multiple > 0.0 && is_integral(x / r_multiple);
            let ok = num(w, "multipleOf").is_some_and(divides) || (integers_only && divides(1.0));
            if !ok {
                found.push(Incompatibility::new(
                    path,
                    format!("the reader requires multiples of {r_multiple}; the writer does not"),
                ));
            }
        }
    }
}
