//! Exact amounts: USD money and physical quantities, as integer billionths.
//! Never floating point. Depends on nothing else in the crate but `Text`.

use super::{FieldViolation, Text};
use std::fmt;

const NANOS_PER_UNIT: u128 = 1_000_000_000;

/// The largest amount accepted for one figure, agreement value or quantity:
/// exactly 10^15 whole units (and no fraction above it).
pub const MAX_UNITS: i64 = 1_000_000_000_000_000;

fn exact(units: i64, nanos: i32) -> Result<u128, FieldViolation> {
    if !(0..=MAX_UNITS).contains(&units) {
        return Err(FieldViolation::new(
            "units",
            format!("must be 0 to {MAX_UNITS} (amounts are never negative), got {units}"),
        ));
    }
    if !(0..1_000_000_000).contains(&nanos) {
        return Err(FieldViolation::new(
            "nanos",
            format!("must be 0 to 999,999,999, got {nanos}"),
        ));
    }
    if units == MAX_UNITS && nanos > 0 {
        return Err(FieldViolation::new(
            "nanos",
            format!("must be 0 when units is {MAX_UNITS}: amounts are at most {MAX_UNITS}"),
        ));
    }
    // Both non-negative and bounded above.
    Ok(units as u128 * NANOS_PER_UNIT + nanos as u128)
}

/// A non-negative amount of US dollars, exact to a billionth of a dollar.
/// Sums of any realistic number of amounts fit the `u128`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct UsdAmount {
    nanos: u128,
}

impl UsdAmount {
    /// Parses a google.type.Money-style amount. The currency code must be
    /// exactly "USD" (ISO 4217 codes are upper case; "usd" is refused).
    pub fn new(currency_code: &str, units: i64, nanos: i32) -> Result<Self, FieldViolation> {
        match currency_code {
            "USD" => {}
            "" => {
                return Err(FieldViolation::new(
                    "currency_code",
                    "is required; only USD is supported for now",
                ))
            }
            other => {
                return Err(FieldViolation::new(
                    "currency_code",
                    format!("only USD is supported for now; got {other:?}"),
                ))
            }
        }
        Ok(UsdAmount {
            nanos: exact(units, nanos)?,
        })
    }

    /// Whole dollars (the part before the decimal point): at most
    /// [`MAX_UNITS`], so the cast is exact.
    pub fn units(&self) -> i64 {
        (self.nanos / NANOS_PER_UNIT) as i64
    }

    /// Billionths of a dollar after the whole dollars.
    pub fn sub_nanos(&self) -> u32 {
        // Always below 10^9.
        (self.nanos % NANOS_PER_UNIT) as u32
    }

    /// The whole amount in billionths of a dollar.
    pub fn total_nanos(&self) -> u128 {
        self.nanos
    }
}

impl fmt::Debug for UsdAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "USD {}.{:09}", self.units(), self.sub_nanos())
    }
}

/// A non-negative physical quantity with its unit, exact to a billionth.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Quantity {
    nanos: u128,
    unit: Text<32>,
}

impl Quantity {
    pub fn new(whole: i64, nanos: i32, unit: &str) -> Result<Self, FieldViolation> {
        let nanos = exact(whole, nanos).map_err(|mut v| {
            if v.field == "units" {
                v.field = "whole".into();
            }
            v
        })?;
        let unit = Text::<32>::parse_required(unit).map_err(|d| FieldViolation::new("unit", d))?;
        Ok(Quantity { nanos, unit })
    }

    /// Whole units: at most [`MAX_UNITS`], so the cast is exact.
    pub fn whole(&self) -> i64 {
        (self.nanos / NANOS_PER_UNIT) as i64
    }
    pub fn sub_nanos(&self) -> u32 {
        (self.nanos % NANOS_PER_UNIT) as u32
    }
    pub fn unit(&self) -> &str {
        self.unit.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_exact_non_negative_usd() {
        let a = UsdAmount::new("USD", 31_200_000_000, 500_000_000).unwrap();
        assert_eq!(a.units(), 31_200_000_000);
        assert_eq!(a.sub_nanos(), 500_000_000);
        assert_eq!(UsdAmount::new("USD", -1, 0).unwrap_err().field, "units");
        assert_eq!(UsdAmount::new("USD", 1, -5).unwrap_err().field, "nanos");
        let eur = UsdAmount::new("EUR", 1, 0).unwrap_err();
        assert_eq!(eur.field, "currency_code");
        assert!(eur.description.contains("only USD"));
        assert_eq!(UsdAmount::new("", 1, 0).unwrap_err().field, "currency_code");
        for other in ["usd", "Usd", " USD", "USD "] {
            assert_eq!(
                UsdAmount::new(other, 1, 0).unwrap_err().field,
                "currency_code",
                "{other:?}"
            );
        }
    }

    #[test]
    fn one_limit_holds_whole_amounts_and_fractions_alike() {
        assert!(UsdAmount::new("USD", MAX_UNITS, 0).is_ok());
        assert_eq!(
            UsdAmount::new("USD", MAX_UNITS, 1).unwrap_err().field,
            "nanos"
        );
        assert!(UsdAmount::new("USD", MAX_UNITS - 1, 999_999_999).is_ok());
        assert_eq!(Quantity::new(MAX_UNITS, 1, "t").unwrap_err().field, "nanos");
        assert_eq!(
            UsdAmount::new("USD", MAX_UNITS, 0).unwrap().units(),
            MAX_UNITS
        );
    }
}
