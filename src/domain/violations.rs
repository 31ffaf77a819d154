//! Bad fields of a request, and the one accumulator that collects them while a
//! request of any kind is parsed, so that a client learns every bad field at
//! once. Depends on nothing.

/// One bad field of a request: `field` is a dot-separated path relative to
/// whatever is being parsed (callers prefix it as they nest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }

    /// The same violation seen from one level up: `prefix.field`.
    pub fn nested(mut self, prefix: &str) -> Self {
        self.field = if prefix.is_empty() {
            self.field
        } else if self.field.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

/// The most violations one answer lists; the rest are counted in a last one.
/// A request of ten thousand bad events is told about the first hundred,
/// not answered with a message as large as itself.
pub const MAX_VIOLATIONS: usize = 100;

/// Collects the violations of one request while its fields are parsed.
///
/// Each method records the violations of one field and returns the parsed
/// value, or `None` when the field was bad; a `None` therefore always comes
/// with a recorded violation, and [`Violations::finish`] turns the parsed
/// parts into the whole or into every violation (at most
/// [`MAX_VIOLATIONS`] of them, then how many more there were).
#[derive(Default, Debug)]
pub struct Violations {
    found: Vec<FieldViolation>,
    /// Violations found beyond [`MAX_VIOLATIONS`].
    more: usize,
}

impl Violations {
    /// Records one violation.
    #[inline]
    pub fn push(&mut self, v: FieldViolation) {
        if self.found.len() < MAX_VIOLATIONS {
            self.found.push(v);
        } else {
            self.more += 1;
        }
    }

    /// Records `Err(description)` as a violation of `field`.
    #[inline]
    pub fn check<T>(&mut self, field: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|d| self.push(FieldViolation::new(field, d))).ok()
    }

    /// Records a violation reported relative to `prefix`.
    #[inline]
    pub fn nested<T>(&mut self, prefix: &str, r: Result<T, FieldViolation>) -> Option<T> {
        r.map_err(|v| self.push(v.nested(prefix))).ok()
    }

    /// Records violations reported relative to `prefix`.
    #[inline]
    pub fn nested_many<T>(&mut self, prefix: &str, r: Result<T, Vec<FieldViolation>>) -> Option<T> {
        r.map_err(|vs| {
            for v in vs {
                self.push(v.nested(prefix));
            }
        })
        .ok()
    }

    /// Records a violation of `field` found by a check across fields.
    pub fn bad(&mut self, field: &str, description: impl Into<String>) {
        self.push(FieldViolation::new(field, description));
    }

    /// Parses each element of a repeated field with `parse`, naming bad ones
    /// `field[i]`; the good ones, in order, collected into a list or a set.
    pub fn each<'a, S: 'a, T, C: FromIterator<T>>(
        &mut self,
        field: &str,
        raw: impl IntoIterator<Item = &'a S>,
        parse: impl Fn(&S) -> Result<T, String>,
    ) -> C {
        // The path is written out only for a bad element.
        raw.into_iter()
            .enumerate()
            .filter_map(|(i, s)| match parse(s) {
                Ok(x) => Some(x),
                Err(d) => {
                    self.bad(&format!("{field}[{i}]"), d);
                    None
                }
            })
            .collect()
    }

    /// Whether nothing bad was found so far.
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The parsed whole when nothing was bad, else the violations. `value` is
    /// built from the parts the methods above returned.
    pub fn finish<T>(mut self, value: Option<T>) -> Result<T, Vec<FieldViolation>> {
        match value {
            Some(v) if self.found.is_empty() => Ok(v),
            // A part can only be missing with its violation recorded; should
            // one ever not be, the request is still refused, never accepted.
            _ if self.found.is_empty() => Err(vec![FieldViolation::new("", "is invalid")]),
            _ => {
                if self.more > 0 {
                    self.found.push(FieldViolation::new(
                        "",
                        format!("and {} more violations", self.more),
                    ));
                }
                Err(self.found)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_field_is_reported_with_its_path() {
        let mut v = Violations::default();
        let a = v.check("a", Ok::<_, String>(1));
        let b: Option<u8> = v.check("b", Err("is required".into()));
        let c: Vec<u8> = v.each("c", &["1", "x", "3"], |s: &&str| {
            s.parse::<u8>().map_err(|e| e.to_string())
        });
        let d: Option<u8> = v.nested("d", Err(FieldViolation::new("year", "too early")));
        assert_eq!(c, [1, 3]);
        let fields: Vec<String> = v
            .finish(a.zip(b).zip(d))
            .unwrap_err()
            .into_iter()
            .map(|f| f.field)
            .collect();
        assert_eq!(fields, ["b", "c[1]", "d.year"]);
    }

    #[test]
    fn at_most_a_hundred_violations_are_listed_then_counted() {
        let mut v = Violations::default();
        for i in 0..250 {
            v.bad(&format!("events[{i}]"), "is bad");
        }
        let found = v.finish(None::<()>).unwrap_err();
        assert_eq!(found.len(), MAX_VIOLATIONS + 1);
        assert_eq!(found[99].field, "events[99]");
        assert_eq!(found[100].description, "and 150 more violations");
    }

    #[test]
    fn a_missing_part_without_a_violation_is_still_refused() {
        assert!(Violations::default().finish(None::<u8>).is_err());
        assert_eq!(Violations::default().finish(Some(7)), Ok(7));
    }
}
