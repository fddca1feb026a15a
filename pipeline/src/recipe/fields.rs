//! Typed, spanned reads from one TOML table.
//!
//! Recipes are read by walking toml's spanned [`DeTable`] rather than through
//! `#[derive(Deserialize)]`: serde stops at the first error, and a person fixing a recipe
//! wants every problem in the file at once, each with its own line and field.

use std::ops::{Range, RangeInclusive};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::Report;

/// One TOML value with its byte span.
pub(super) type Value<'i> = Spanned<DeValue<'i>>;

/// A table being read key by key; [`Fields::finish`] reports the keys nobody read.
pub(super) struct Fields<'t, 'i> {
    table: &'t DeTable<'i>,
    /// Dotted path of the table, with a trailing `.` (empty at the top level).
    prefix: String,
    /// Where "missing field" errors point.
    pub(super) at: Range<usize>,
    read: Vec<&'t str>,
}

impl<'t, 'i> Fields<'t, 'i> {
    pub(super) fn new(table: &'t DeTable<'i>, prefix: String, at: Range<usize>) -> Self {
        Self {
            table,
            prefix,
            at,
            read: Vec::new(),
        }
    }

    /// The dotted name of `key` in this table, as errors show it.
    pub(super) fn field(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Whether the table has `key`.
    pub(super) fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// The value of `key`, marking it read.
    pub(super) fn value(&mut self, key: &str) -> Option<&'t Value<'i>> {
        let (k, v) = self.table.get_key_value(key)?;
        self.read.push(k.get_ref());
        Some(v)
    }

    /// Reports `key` as missing unless present.
    pub(super) fn require(&self, report: &mut Report, key: &str, what: &str) {
        if !self.has(key) {
            let field = self.field(key);
            report.error(self.at.clone(), Some(&field), format!("missing; {what}"));
        }
    }

    /// Reports `key`, if present, as not allowed here.
    pub(super) fn misplaced(&self, report: &mut Report, key: &str, why: &str) {
        if let Some((k, _)) = self.table.get_key_value(key) {
            report.error(k.span(), Some(&self.field(key)), why);
        }
    }

    /// A string value.
    pub(super) fn string(&mut self, report: &mut Report, key: &str) -> Option<Spanned<&'t str>> {
        let v = self.value(key)?;
        match v.get_ref() {
            DeValue::String(s) => Some(Spanned::new(v.span(), s.as_ref())),
            other => {
                report.error(
                    v.span(),
                    Some(&self.field(key)),
                    expected("a string", other),
                );
                None
            }
        }
    }

    /// A boolean value.
    pub(super) fn boolean(&mut self, report: &mut Report, key: &str) -> Option<bool> {
        let v = self.value(key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                report.error(
                    v.span(),
                    Some(&self.field(key)),
                    expected("true or false", other),
                );
                None
            }
        }
    }

    /// An integer within `range`.
    pub(super) fn integer(
        &mut self,
        report: &mut Report,
        key: &str,
        range: RangeInclusive<u64>,
    ) -> Option<u64> {
        let v = self.value(key)?;
        let field = self.field(key);
        let DeValue::Integer(i) = v.get_ref() else {
            report.error(v.span(), Some(&field), expected("an integer", v.get_ref()));
            return None;
        };
        // i128 holds every TOML integer, so out-of-range values are reported, not rejected as garbage.
        let n = i128::from_str_radix(i.as_str(), i.radix()).ok();
        match n
            .and_then(|n| u64::try_from(n).ok())
            .filter(|n| range.contains(n))
        {
            Some(n) => Some(n),
            None => {
                let (lo, hi) = (range.start(), range.end());
                report.error(
                    v.span(),
                    Some(&field),
                    format!("must be between {lo} and {hi}, got {i}"),
                );
                None
            }
        }
    }

    /// A finite number within `range` (integers are accepted); `open_low` excludes the lower bound.
    pub(super) fn number(
        &mut self,
        report: &mut Report,
        key: &str,
        range: RangeInclusive<f64>,
        open_low: bool,
    ) -> Option<f64> {
        let v = self.value(key)?;
        let field = self.field(key);
        let (x, text) = match v.get_ref() {
            DeValue::Float(f) => (f.as_str().parse::<f64>().ok(), f.as_str()),
            DeValue::Integer(i) if i.radix() == 10 => (i.as_str().parse::<f64>().ok(), i.as_str()),
            other => {
                report.error(v.span(), Some(&field), expected("a number", other));
                return None;
            }
        };
        let (lo, hi) = (*range.start(), *range.end());
        let fits = |x: f64| x.is_finite() && x <= hi && (x > lo || (!open_low && x == lo));
        match x.filter(|&x| fits(x)) {
            Some(x) => Some(x),
            None => {
                let low = if open_low { "above" } else { "between" };
                let and = if open_low { "and at most" } else { "and" };
                report.error(
                    v.span(),
                    Some(&field),
                    format!("must be a number {low} {lo:?} {and} {hi:?}, got {text}"),
                );
                None
            }
        }
    }

    /// A table value, to be read with its own [`Fields`].
    pub(super) fn table(&mut self, report: &mut Report, key: &str) -> Option<Fields<'t, 'i>> {
        let v = self.value(key)?;
        match v.get_ref() {
            DeValue::Table(t) => Some(Fields::new(t, format!("{}.", self.field(key)), v.span())),
            other => {
                report.error(v.span(), Some(&self.field(key)), expected("a table", other));
                None
            }
        }
    }

    /// Reports every key that was not read, suggesting the closest of `known`.
    pub(super) fn finish(self, report: &mut Report, known: &[&str]) {
        for (k, _) in self.table.iter() {
            let key: &str = k.get_ref();
            if self.read.contains(&key) {
                continue;
            }
            let hint = closest(key, known).map_or_else(
                || format!("; known keys: {}", known.join(", ")),
                |s| format!("; did you mean `{s}`?"),
            );
            report.error(
                k.span(),
                Some(&self.field(key)),
                format!("unknown key{hint}"),
            );
        }
    }
}

/// "expected X, got Y" for a value of the wrong type.
pub(super) fn expected(what: &str, got: &DeValue) -> String {
    format!("expected {what}, got {}", describe(got))
}

fn describe(value: &DeValue) -> String {
    match value {
        DeValue::String(s) => format!("the string {s:?}"),
        DeValue::Integer(i) => format!("the integer {i}"),
        DeValue::Float(f) => format!("the number {f}"),
        DeValue::Boolean(b) => format!("{b}"),
        DeValue::Array(_) => "an array".into(),
        other => format!("a {}", other.type_str()),
    }
}

/// The candidate nearest to `word`, if it is close enough to be a likely typo.
pub(super) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|&(d, c)| d <= (c.len() / 3).max(1) && d < word.len())
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Levenshtein distance; a dozen lines do not justify a dependency.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        let known = ["prompt", "negative_prompt", "size", "steps"];
        assert_eq!(closest("promt", &known), Some("prompt"));
        assert_eq!(closest("sise", &known), Some("size"));
        assert_eq!(closest("colour_palette", &known), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
