//! The domain: trade figures, cooperation agreements and the events that carry
//! them, as types that can only hold valid values ("parse, don't validate").
//!
//! Every type here is built through a `parse`/`new` function that checks its
//! input; code that holds a domain value never re-checks it. This module must
//! not depend on the generated protobuf code, on tonic or on sled: the wire and
//! the store convert into and out of these types at their edges.

mod country;
mod event;
mod lifecycle;
mod money;
mod period;
mod sector;
mod sets;
mod text;
mod time;
mod violations;

pub use country::Country;
pub use event::{
    Agreement, AgreementId, AgreementKind, AgreementParts, AgreementStatus, AgreementStatusChanged,
    CommodityScope, Event, EventId, EventKind, FeedName, Flow, HsCode, IdentityName, Payload,
    StoredEvent, TradeFigureKey, TradeRecord, TradeRecordRetracted,
};
pub use lifecycle::{next_statuses, Broken, Lifecycle};
pub use money::{Quantity, UsdAmount, MAX_UNITS};
pub use period::{Frequency, Period};
pub use sector::Sector;
pub use sets::{BitSet, CountrySet, SectorSet};
pub use text::Text;
pub use time::{Date, Timestamp};
pub use violations::{FieldViolation, Violations};
