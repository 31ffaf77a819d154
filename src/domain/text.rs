//! Bounded free text. Depends on nothing else in the crate.

use std::fmt;

/// Text of at most `MAX` characters with no control characters other than
/// newline and tab, trimmed of surrounding white space. May be empty; callers
/// that need a value check [`Text::is_empty`].
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Text<const MAX: usize>(String);

impl<const MAX: usize> Text<MAX> {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let chars = t.chars().count();
        if chars > MAX {
            return Err(format!("at most {MAX} characters are allowed, got {chars}"));
        }
        if t.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err("control characters are not allowed".into());
        }
        Ok(Text(t.to_owned()))
    }

    /// Like [`Text::parse`], but empty text is an error.
    pub fn parse_required(s: &str) -> Result<Self, String> {
        let t = Self::parse(s)?;
        if t.is_empty() {
            return Err("is required".into());
        }
        Ok(t)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<const MAX: usize> fmt::Debug for Text<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<const MAX: usize> fmt::Display for Text<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks an identifier: 1 to `max` characters of `A-Z a-z 0-9 . _ : / -`.
pub(crate) fn identifier(s: &str, max: usize) -> Result<String, String> {
    if s.is_empty() {
        return Err("is required".into());
    }
    if s.len() > max {
        return Err(format!(
            "at most {max} characters are allowed, got {}",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-')))
    {
        return Err(format!(
            "{c:?} is not allowed: use A-Z a-z 0-9 . _ : / - only"
        ));
    }
    Ok(s.to_owned())
}
