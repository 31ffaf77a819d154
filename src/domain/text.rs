//! Bounded free text, and the character rules of text and identifiers.
//!
//! - **Identifiers** (event ids) hold visible characters only: no control
//!   characters, no invisible format characters (bidi embeddings, overrides
//!   and isolates, zero-width spaces and joiners, the byte-order mark, soft
//!   hyphens, tags …), no line or paragraph separators, no noncharacters. An
//!   id such as `evil\u{202e}gnp.exe` is refused.
//! - **Free text** (titles, notes, sources, venues, units) may hold what a
//!   person writes in any script, including newlines, tabs, right-to-left
//!   marks, isolates and zero-width joiners; refused are the other control
//!   characters, the bidi embedding and override controls (U+202A–U+202E,
//!   which can make text display in another order than it is stored), line
//!   and paragraph separators (use a newline) and noncharacters.
//!
//! Depends on nothing else in the crate.

use std::fmt;

/// Text of at most `MAX` characters with no control characters other than
/// newline and tab, trimmed of surrounding white space. May be empty; callers
/// that need a value check [`Text::is_empty`].
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Text<const MAX: usize>(String);

impl<const MAX: usize> Text<MAX> {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        // Most text is ASCII: one pass over its bytes, where only controls
        // can be refused.
        let ascii = t.is_ascii();
        let chars = if ascii { t.len() } else { t.chars().count() };
        if chars > MAX {
            return Err(format!("at most {MAX} characters are allowed, got {chars}"));
        }
        let control = |c: char| c.is_control() && c != '\n' && c != '\t';
        let has_control = if ascii {
            t.bytes().any(|b| control(char::from(b)))
        } else {
            t.chars().any(control)
        };
        if has_control {
            return Err("control characters are not allowed".into());
        }
        if ascii {
            return Ok(Text(t.to_owned()));
        }
        if let Some(c) = t.chars().find(|c| refused_in_text(*c)) {
            return Err(format!(
                "{:?} (U+{:04X}) is not allowed: bidi embedding and override controls, \
                 line and paragraph separators and noncharacters are refused",
                c, c as u32
            ));
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

/// Whether `c` is a noncharacter (U+FDD0–U+FDEF and the last two code
/// points of every plane).
fn noncharacter(c: char) -> bool {
    let u = c as u32;
    (0xFDD0..=0xFDEF).contains(&u) || (u & 0xFFFE) == 0xFFFE
}

/// Characters free text refuses beyond control characters.
fn refused_in_text(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2028}' | '\u{2029}') || noncharacter(c)
}

/// Whether `c` is invisible or changes how text around it displays: the
/// Unicode format characters (general category Cf), line and paragraph
/// separators, and the characters of free text's refusal list.
pub(crate) fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    ) || refused_in_text(c)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_allows_what_people_write_and_refuses_what_hides_text() {
        for ok in [
            "Astana, 2025\nsecond line\twith a tab",
            "Uzbek gas: 1.07 bn (\u{200f}RLM mark)",
            "می\u{200c}خواهم",
            "family 👨\u{200d}👩\u{200d}👧",
            "\u{2067}isolated\u{2069}",
        ] {
            assert!(Text::<512>::parse(ok).is_ok(), "{ok:?} refused");
        }
        for bad in [
            "admin\u{202e}txt.exe",
            "a\u{202a}b",
            "line\u{2028}separator",
            "a\u{7}b",
            "a\u{fdd0}",
        ] {
            assert!(Text::<512>::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
