//! Events and their payloads: trade figures, retractions, agreements and
//! agreement status changes. Depends only on the other domain modules.

use super::text::identifier;
use super::{Country, Date, FieldViolation, Period, Quantity, Sector, Text, Timestamp, UsdAmount};
use std::fmt;

/// The longest event id, in bytes.
pub const MAX_EVENT_ID_BYTES: usize = 128;
/// The longest feed name.
pub const MAX_FEED_NAME: usize = 64;
/// The longest agreement id.
pub const MAX_AGREEMENT_ID: usize = 128;

/// A feed-chosen idempotency key: 1 to 128 bytes of visible text (no control
/// or invisible format characters; see `text`), kept exactly as sent (not
/// trimmed).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(String);

impl EventId {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("is required".into());
        }
        if s.len() > MAX_EVENT_ID_BYTES {
            return Err(format!(
                "at most {MAX_EVENT_ID_BYTES} bytes are allowed, got {}",
                s.len()
            ));
        }
        if s.chars().any(char::is_control) {
            return Err("control characters are not allowed".into());
        }
        // No ASCII character but the controls is invisible.
        if s.is_ascii() {
            return Ok(EventId(s.to_owned()));
        }
        if let Some(c) = s.chars().find(|c| super::text::invisible(*c)) {
            return Err(format!(
                "U+{:04X} is not allowed: an id holds visible characters only \
                 (no bidi controls, zero-width or other invisible format characters)",
                c as u32
            ));
        }
        Ok(EventId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of the feed that sent an event.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct FeedName(String);

impl fmt::Display for FeedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FeedName {
    pub fn parse(s: &str) -> Result<Self, String> {
        identifier(s, MAX_FEED_NAME).map(FeedName)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name of an identity of the server's auth file (who wrote an event):
/// the same characters as a feed name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct IdentityName(std::sync::Arc<str>);

/// Longest identity name.
pub const MAX_IDENTITY_NAME: usize = 64;

impl IdentityName {
    pub fn parse(s: &str) -> Result<Self, String> {
        identifier(s, MAX_IDENTITY_NAME).map(|s| IdentityName(s.into()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdentityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The stable id of a cooperation document.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct AgreementId(String);

impl AgreementId {
    pub fn parse(s: &str) -> Result<Self, String> {
        identifier(s, MAX_AGREEMENT_ID).map(AgreementId)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgreementId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Direction of a figure from the reporter's point of view.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Flow {
    Export,
    Import,
    ReExport,
    ReImport,
    /// A published two-way total when no split is given.
    Turnover,
}

/// A Harmonized System code of 2, 4 or 6 digits whose chapter is 01 to 99.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HsCode {
    digits: [u8; 6],
    len: u8,
}

impl HsCode {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if !matches!(t.len(), 2 | 4 | 6) || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{s:?} is not an HS code of 2, 4 or 6 digits"));
        }
        let mut digits = [0u8; 6];
        digits[..t.len()].copy_from_slice(t.as_bytes());
        let code = HsCode {
            digits,
            len: t.len() as u8,
        };
        if code.chapter() == 0 {
            return Err(format!("{s:?}: HS chapter 00 does not exist"));
        }
        Ok(code)
    }

    /// The code of exactly these digits (no spaces): what [`HsCode::parse`]
    /// accepts, checked without building a string (stored keys hold them).
    pub fn from_digits(d: &[u8]) -> Option<Self> {
        if !matches!(d.len(), 2 | 4 | 6) || !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut digits = [0u8; 6];
        digits[..d.len()].copy_from_slice(d);
        let code = HsCode {
            digits,
            len: d.len() as u8,
        };
        (code.chapter() != 0).then_some(code)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits are stored.
        std::str::from_utf8(&self.digits[..self.len as usize]).unwrap_or("")
    }

    /// The chapter: the first two digits.
    pub fn chapter(&self) -> u8 {
        (self.digits[0] - b'0') * 10 + (self.digits[1] - b'0')
    }

    /// The sector of the code's chapter.
    pub fn sector(&self) -> Sector {
        Sector::of_hs_chapter(self.chapter())
    }
}

impl fmt::Debug for HsCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HS{}", self.as_str())
    }
}

/// Which goods a figure covers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum CommodityScope {
    All,
    Hs(HsCode),
    Sector(Sector),
}

/// The natural key of a trade figure: a later record with the same key is a
/// revision of it. Reporter and partner always differ.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct TradeFigureKey {
    reporter: Country,
    partner: Country,
    pub flow: Flow,
    pub period: Period,
    pub commodity: CommodityScope,
}

impl TradeFigureKey {
    /// Fails (naming the `partner` field) when partner and reporter are the
    /// same country.
    pub fn new(
        reporter: Country,
        partner: Country,
        flow: Flow,
        period: Period,
        commodity: CommodityScope,
    ) -> Result<Self, FieldViolation> {
        if reporter == partner {
            return Err(FieldViolation::new(
                "partner",
                format!("must differ from the reporter ({reporter})"),
            ));
        }
        Ok(TradeFigureKey {
            reporter,
            partner,
            flow,
            period,
            commodity,
        })
    }

    pub fn reporter(&self) -> Country {
        self.reporter
    }
    pub fn partner(&self) -> Country {
        self.partner
    }
}

/// A trade figure.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TradeRecord {
    pub key: TradeFigureKey,
    pub value: UsdAmount,
    pub quantity: Option<Quantity>,
    pub source: Text<512>,
    pub note: Text<2048>,
}

/// Withdraws the figure with this key.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TradeRecordRetracted {
    pub key: TradeFigureKey,
    /// Never empty.
    pub reason: Text<2048>,
}

/// The kind of a cooperation document.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AgreementKind {
    Declaration,
    MemorandumOfUnderstanding,
    IntergovernmentalAgreement,
    Treaty,
    CommercialContract,
    InvestmentAgreement,
    Other,
}

/// Where a cooperation document stands.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AgreementStatus {
    Signed,
    InForce,
    Expired,
    Terminated,
}

/// A cooperation document: at least two distinct parties and at least one
/// sector, each listed once.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Agreement {
    pub id: AgreementId,
    /// Never empty.
    pub title: Text<512>,
    parties: Vec<Country>,
    pub signed_on: Date,
    pub venue: Text<256>,
    pub kind: AgreementKind,
    sectors: Vec<Sector>,
    pub value: Option<UsdAmount>,
    pub status: AgreementStatus,
    pub source: Text<512>,
    pub note: Text<2048>,
}

/// The parts of an agreement that are checked together with the rest.
pub struct AgreementParts {
    pub id: AgreementId,
    pub title: Text<512>,
    pub signed_on: Date,
    pub venue: Text<256>,
    pub kind: AgreementKind,
    pub value: Option<UsdAmount>,
    pub status: AgreementStatus,
    pub source: Text<512>,
    pub note: Text<2048>,
}

impl Agreement {
    /// Checks parties (two or more, no repeats) and sectors (one or more, no
    /// repeats); violations name `parties` or `sectors`.
    pub fn new(
        parts: AgreementParts,
        parties: Vec<Country>,
        sectors: Vec<Sector>,
    ) -> Result<Self, Vec<FieldViolation>> {
        let mut bad = Vec::new();
        if parties.len() < 2 {
            bad.push(FieldViolation::new(
                "parties",
                "an agreement needs two or more parties",
            ));
        }
        let mut seen = super::CountrySet::default();
        if let Some(dup) = parties.iter().find(|p| {
            let again = seen.contains(**p);
            seen.insert(**p);
            again
        }) {
            bad.push(FieldViolation::new(
                "parties",
                format!("{dup} is listed more than once"),
            ));
        }
        if sectors.is_empty() {
            bad.push(FieldViolation::new(
                "sectors",
                "at least one sector is required",
            ));
        }
        let mut seen = super::SectorSet::default();
        if let Some(dup) = sectors.iter().find(|s| {
            let again = seen.contains(**s);
            seen.insert(**s);
            again
        }) {
            bad.push(FieldViolation::new(
                "sectors",
                format!("{dup} is listed more than once"),
            ));
        }
        if !bad.is_empty() {
            return Err(bad);
        }
        let AgreementParts {
            id,
            title,
            signed_on,
            venue,
            kind,
            value,
            status,
            source,
            note,
        } = parts;
        Ok(Agreement {
            id,
            title,
            parties,
            signed_on,
            venue,
            kind,
            sectors,
            value,
            status,
            source,
            note,
        })
    }

    pub fn parties(&self) -> &[Country] {
        &self.parties
    }
    pub fn sectors(&self) -> &[Sector] {
        &self.sectors
    }
}

/// A new status for an existing agreement.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AgreementStatusChanged {
    pub agreement_id: AgreementId,
    pub status: AgreementStatus,
    pub effective_on: Date,
    pub note: Text<2048>,
}

/// What an event carries.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Payload {
    TradeRecord(TradeRecord),
    TradeRecordRetracted(TradeRecordRetracted),
    Agreement(Agreement),
    AgreementStatusChanged(AgreementStatusChanged),
}

/// Which of the four payloads an event carries.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EventKind {
    TradeRecord,
    TradeRecordRetracted,
    Agreement,
    AgreementStatusChanged,
}

impl Payload {
    pub fn kind(&self) -> EventKind {
        match self {
            Payload::TradeRecord(_) => EventKind::TradeRecord,
            Payload::TradeRecordRetracted(_) => EventKind::TradeRecordRetracted,
            Payload::Agreement(_) => EventKind::Agreement,
            Payload::AgreementStatusChanged(_) => EventKind::AgreementStatusChanged,
        }
    }
}

/// An event as a feed sends it. Two events are "the same" when they are equal
/// as values: normalisation happened while parsing.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Event {
    pub id: EventId,
    pub feed: FeedName,
    pub occurred_at: Option<Timestamp>,
    pub payload: Payload,
}

/// An event with the fields the server assigned when it stored it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StoredEvent {
    pub sequence: u64,
    pub ingested_at: Timestamp,
    pub event: Event,
    /// The identity that appended it; `None` when the server ran without
    /// identities, or the event is older than they are.
    pub written_by: Option<IdentityName>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hs_codes_have_two_four_or_six_digits() {
        assert_eq!(HsCode::parse("2711").unwrap().chapter(), 27);
        assert_eq!(HsCode::parse("271111").unwrap().sector(), Sector::Energy);
        for bad in ["2", "271", "27111", "2711111", "00", "ab", ""] {
            assert!(HsCode::parse(bad).is_err(), "{bad} accepted");
            assert_eq!(HsCode::from_digits(bad.as_bytes()), None);
        }
        for good in ["01", "2711", "271111", "99"] {
            assert_eq!(
                HsCode::from_digits(good.as_bytes()),
                HsCode::parse(good).ok()
            );
        }
        assert_eq!(HsCode::from_digits(b" 27 "), None);
    }

    #[test]
    fn event_ids_keep_their_exact_bytes() {
        assert_eq!(EventId::parse(" a ").unwrap().as_str(), " a ");
        assert!(EventId::parse("").is_err());
        assert!(EventId::parse("a\u{0}b").is_err());
        assert!(EventId::parse(&"x".repeat(129)).is_err());
        for hidden in [
            "evil\u{202e}gnp.exe",
            "a\u{200b}b",
            "a\u{2066}b",
            "a\u{feff}",
            "a\u{2028}b",
            "\u{e0041}",
            "a\u{ad}b",
            "a\u{ffff}",
        ] {
            assert!(EventId::parse(hidden).is_err(), "{hidden:?} accepted");
        }
        // Any visible script is fine.
        for visible in ["мофком-2022", "海关-1", "دمشق-٣", "ä ö"] {
            assert!(EventId::parse(visible).is_ok(), "{visible:?} refused");
        }
    }
}
