//! The domain: trade figures, cooperation agreements and the events that carry
//! them, as types that can only hold valid values ("parse, don't validate").
//!
//! Every type here is built through a `parse`/`new` function that checks its
//! input; code that holds a domain value never re-checks it. This module must
//! not depend on the generated protobuf code, on tonic or on sled: the wire and
//! the store convert into and out of these types at their edges.

mod country;
mod event;
mod money;
mod period;
mod sector;
mod text;
mod time;

pub use country::Country;
pub use event::{
    Agreement, AgreementId, AgreementKind, AgreementParts, AgreementStatus, AgreementStatusChanged,
    CommodityScope, Event, EventId, FeedName, Flow, HsCode, Payload, StoredEvent, TradeFigureKey,
    TradeRecord, TradeRecordRetracted,
};
pub use money::{Quantity, UsdAmount};
pub use period::{Frequency, Period};
pub use sector::Sector;
pub use text::Text;
pub use time::{Date, Timestamp};

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
