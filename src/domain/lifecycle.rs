//! The life of a cooperation agreement: which status may follow which, and
//! in what date order.
//!
//! ```text
//!   SIGNED ──▶ IN_FORCE ──▶ EXPIRED     (final)
//!     │           │
//!     └───────────┴───────▶ TERMINATED  (final)
//! ```
//!
//! - The first version of an agreement may have any status (a treaty long in
//!   force can be recorded as IN_FORCE).
//! - A status change moves along an arrow: never back, never to the status the
//!   agreement already has, never out of EXPIRED or TERMINATED. Its
//!   `effective_on` is not before the signing date nor before the previous
//!   change's, so the history is in date order.
//! - An amendment (a new version under the same id) corrects the agreement's
//!   other fields; its `status` must be the current one (statuses change only
//!   through a status change, which carries its date), and its `signed_on` must
//!   not move after the first status change. A correction of a status change
//!   is not possible: send the right next change.
//!
//! Depends only on the domain's agreement types.

use super::{Agreement, AgreementStatus, AgreementStatusChanged, Date};

/// Where an agreement stands after its events so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    pub status: AgreementStatus,
    pub signed_on: Date,
    /// The effective date of the first and of the latest status change.
    pub first_change: Option<Date>,
    pub last_change: Option<Date>,
}

/// Why an agreement event does not follow from where the agreement stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    /// A short name of the rule (`google.rpc.PreconditionFailure` type).
    pub rule: &'static str,
    /// The event's field the rule is about, relative to the payload.
    pub field: &'static str,
    pub description: String,
}

fn name(s: AgreementStatus) -> &'static str {
    match s {
        AgreementStatus::Signed => "SIGNED",
        AgreementStatus::InForce => "IN_FORCE",
        AgreementStatus::Expired => "EXPIRED",
        AgreementStatus::Terminated => "TERMINATED",
    }
}

/// The statuses `from` may change to.
pub fn next_statuses(from: AgreementStatus) -> &'static [AgreementStatus] {
    use AgreementStatus::*;
    match from {
        Signed => &[InForce, Terminated],
        InForce => &[Expired, Terminated],
        Expired | Terminated => &[],
    }
}

impl Lifecycle {
    /// The lifecycle of an agreement's first version.
    pub fn start(a: &Agreement) -> Self {
        Lifecycle {
            status: a.status,
            signed_on: a.signed_on,
            first_change: None,
            last_change: None,
        }
    }

    /// Checks a status change and returns where it leaves the agreement.
    pub fn change(&self, c: &AgreementStatusChanged) -> Result<Lifecycle, Broken> {
        let allowed = next_statuses(self.status);
        if allowed.is_empty() {
            return Err(Broken {
                rule: "AGREEMENT_FINAL_STATUS",
                field: "status",
                description: format!(
                    "the agreement is {}, a final status: it changes no more",
                    name(self.status)
                ),
            });
        }
        if !allowed.contains(&c.status) {
            let names: Vec<&str> = allowed.iter().map(|s| name(*s)).collect();
            return Err(Broken {
                rule: "AGREEMENT_STATUS_TRANSITION",
                field: "status",
                description: format!(
                    "{} cannot become {}; it can become {}",
                    name(self.status),
                    name(c.status),
                    names.join(" or ")
                ),
            });
        }
        let not_before = self
            .last_change
            .unwrap_or(self.signed_on)
            .max(self.signed_on);
        if c.effective_on < not_before {
            return Err(Broken {
                rule: "AGREEMENT_DATE_ORDER",
                field: "effective_on",
                description: format!(
                    "{} is before {not_before}, the agreement's {}",
                    c.effective_on,
                    if self.last_change.is_some() {
                        "latest status change"
                    } else {
                        "signing date"
                    }
                ),
            });
        }
        Ok(self.changed(c))
    }

    /// Checks an amendment and returns where it leaves the agreement.
    pub fn amend(&self, a: &Agreement) -> Result<Lifecycle, Broken> {
        if a.status != self.status {
            return Err(Broken {
                rule: "AGREEMENT_AMENDMENT_STATUS",
                field: "status",
                description: format!(
                    "an amendment keeps the status ({}); change it with an AgreementStatusChanged event, which carries its date",
                    name(self.status)
                ),
            });
        }
        if let Some(first) = self.first_change {
            if a.signed_on > first {
                return Err(Broken {
                    rule: "AGREEMENT_DATE_ORDER",
                    field: "signed_on",
                    description: format!(
                        "{} is after {first}, the agreement's first status change",
                        a.signed_on
                    ),
                });
            }
        }
        Ok(self.amended(a))
    }

    /// A status change applied as it was recorded (replaying a log written
    /// before these rules: nothing is checked).
    pub fn changed(&self, c: &AgreementStatusChanged) -> Lifecycle {
        Lifecycle {
            status: c.status,
            first_change: self.first_change.or(Some(c.effective_on)),
            last_change: Some(c.effective_on),
            ..*self
        }
    }

    /// An amendment applied as it was recorded.
    pub fn amended(&self, a: &Agreement) -> Lifecycle {
        Lifecycle {
            status: a.status,
            signed_on: a.signed_on,
            ..*self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AgreementId, Text};
    use AgreementStatus::*;

    fn date(y: i32, m: i32, d: i32) -> Date {
        Date::new(y, m, d).unwrap()
    }

    fn change(status: AgreementStatus, on: Date) -> AgreementStatusChanged {
        AgreementStatusChanged {
            agreement_id: AgreementId::parse("a").unwrap(),
            status,
            effective_on: on,
            note: Text::parse("").unwrap(),
        }
    }

    fn signed(on: Date) -> Lifecycle {
        Lifecycle {
            status: Signed,
            signed_on: on,
            first_change: None,
            last_change: None,
        }
    }

    #[test]
    fn every_transition_is_allowed_or_refused_by_the_table() {
        let all = [Signed, InForce, Expired, Terminated];
        let day = date(2024, 1, 1);
        for from in all {
            for to in all {
                let life = Lifecycle {
                    status: from,
                    ..signed(date(2023, 1, 1))
                };
                let got = life.change(&change(to, day));
                let ok = matches!(
                    (from, to),
                    (Signed, InForce)
                        | (Signed, Terminated)
                        | (InForce, Expired)
                        | (InForce, Terminated)
                );
                assert_eq!(got.is_ok(), ok, "{from:?} → {to:?}: {got:?}");
                if let Err(b) = got {
                    let final_from = matches!(from, Expired | Terminated);
                    let rule = if final_from {
                        "AGREEMENT_FINAL_STATUS"
                    } else {
                        "AGREEMENT_STATUS_TRANSITION"
                    };
                    assert_eq!(b.rule, rule);
                }
            }
        }
    }

    #[test]
    fn changes_keep_date_order() {
        let life = signed(date(2023, 5, 19));
        let early = life.change(&change(InForce, date(2020, 1, 1))).unwrap_err();
        assert_eq!(
            (early.rule, early.field),
            ("AGREEMENT_DATE_ORDER", "effective_on")
        );
        let in_force = life.change(&change(InForce, date(2024, 1, 1))).unwrap();
        assert!(in_force
            .change(&change(Expired, date(2023, 12, 31)))
            .is_err());
        let expired = in_force.change(&change(Expired, date(2024, 1, 1))).unwrap();
        assert_eq!(expired.first_change, Some(date(2024, 1, 1)));
        assert_eq!(expired.status, Expired);
    }
}
