//! What a subscription delivers: events of some kinds, about some countries,
//! in some sectors. A trade record is about its reporter and partner and its
//! commodity's sector; an agreement about its parties and sectors; a status
//! change about its agreement's parties and sectors as of that event.
//!
//! Depends on the domain and the views (for a status change's agreement).

use crate::domain::{
    BitSet, Country, CountrySet, EventKind, Payload, Sector, SectorSet, StoredEvent,
};
use crate::views::{scope_sector, Views};

/// Which events a subscription delivers; an empty list means any.
pub(super) struct Filter {
    pub kinds: BitSet<EventKind>,
    pub countries: CountrySet,
    pub sectors: SectorSet,
}

impl Filter {
    pub(super) fn matches(&self, e: &StoredEvent, views: &Views) -> bool {
        let kind = e.event.payload.kind();
        if !self.kinds.admits(kind) {
            return false;
        }
        if self.countries.is_empty() && self.sectors.is_empty() {
            return true;
        }
        let (countries, sectors): (Vec<Country>, Vec<Sector>) = match &e.event.payload {
            Payload::TradeRecord(r) => (
                vec![r.key.reporter(), r.key.partner()],
                scope_sector(&r.key.commodity).into_iter().collect(),
            ),
            Payload::TradeRecordRetracted(r) => (
                vec![r.key.reporter(), r.key.partner()],
                scope_sector(&r.key.commodity).into_iter().collect(),
            ),
            Payload::Agreement(a) => (a.parties().to_vec(), a.sectors().to_vec()),
            Payload::AgreementStatusChanged(c) => {
                match views.read().agreement_at(&c.agreement_id, e.sequence) {
                    Some(a) => (a.parties().to_vec(), a.sectors().to_vec()),
                    None => return false,
                }
            }
        };
        (self.countries.is_empty() || countries.iter().any(|c| self.countries.contains(*c)))
            && (self.sectors.is_empty() || sectors.iter().any(|s| self.sectors.contains(*s)))
    }
}
