//! Agreements as of a snapshot: an agreement's latest version with its
//! status history, and the agreements two countries are both parties to.
//!
//! Depends only on the domain and the index.

use super::index::{AgreementEntry, Index};
use crate::domain::{Agreement, AgreementStatus, Country, Date, Sector};
use std::sync::Arc;

/// A status an agreement had.
#[derive(Clone, Debug)]
pub(crate) struct StatusEntry {
    pub status: AgreementStatus,
    pub effective_on: Date,
    pub sequence: u64,
    pub note: String,
}

/// An agreement as of a snapshot.
#[derive(Clone, Debug)]
pub(crate) struct AgreementState {
    /// The latest version (its `status` field is the version's own).
    pub agreement: Arc<Agreement>,
    pub status: AgreementStatus,
    pub history: Vec<StatusEntry>,
    pub sequence: u64,
}

/// The state of an agreement from its entries up to `snapshot`; `None` if no
/// version of it existed then.
pub(crate) fn agreement_state(
    entries: &[(u64, AgreementEntry)],
    snapshot: u64,
) -> Option<AgreementState> {
    let mut latest: Option<Arc<Agreement>> = None;
    let mut history: Vec<StatusEntry> = Vec::new();
    let mut sequence = 0;
    for (seq, entry) in entries.iter().take_while(|(s, _)| *s <= snapshot) {
        sequence = *seq;
        match entry {
            AgreementEntry::Version(a) => {
                // The first entry is the signing: an amendment that corrects
                // the signing date corrects it.
                if let Some(first) = history.first_mut() {
                    first.effective_on = a.signed_on;
                }
                // A status set by an amendment happens only in logs written
                // before amendments had to keep the status.
                if history.last().is_none_or(|h| h.status != a.status) {
                    history.push(StatusEntry {
                        status: a.status,
                        effective_on: a.signed_on,
                        sequence: *seq,
                        note: if history.is_empty() {
                            String::new()
                        } else {
                            "status set by an amendment".into()
                        },
                    });
                }
                latest = Some(Arc::clone(a));
            }
            AgreementEntry::Status {
                status,
                effective_on,
                note,
            } => history.push(StatusEntry {
                status: *status,
                effective_on: *effective_on,
                sequence: *seq,
                note: note.as_str().to_owned(),
            }),
        }
    }
    let agreement = latest?;
    let status = history.last().map_or(agreement.status, |h| h.status);
    Some(AgreementState {
        agreement,
        status,
        history,
        sequence,
    })
}

/// Agreements (as of `snapshot`) with both countries as parties.
pub(crate) fn pair_agreements(
    index: &Index,
    snapshot: u64,
    a: Country,
    b: Country,
    sector: Option<Sector>,
) -> Vec<AgreementState> {
    let (Some(of_a), Some(of_b)) = (
        index.agreements_by_party.get(&a),
        index.agreements_by_party.get(&b),
    ) else {
        return Vec::new();
    };
    of_a.intersection(of_b)
        .filter_map(|id| index.agreements.get(id))
        .filter_map(|entries| agreement_state(entries, snapshot))
        .filter(|s| {
            let parties = s.agreement.parties();
            parties.contains(&a)
                && parties.contains(&b)
                && sector.is_none_or(|sec| s.agreement.sectors().contains(&sec))
        })
        .collect()
}
