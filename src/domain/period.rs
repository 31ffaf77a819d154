//! Reference periods: a year and its frequency. Depends on nothing else in the
//! crate.

use super::FieldViolation;
use std::fmt;

/// How a period is cut. Figures of different frequencies are never summed
/// together.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Frequency {
    Annual,
    Quarterly,
    Monthly,
    /// Cumulative from January through a month ("Jan–Nov", "H1").
    YearToDate,
}

/// A year plus its frequency; the sub-period number is consistent with the
/// frequency (0 for annual, 1–4 for a quarter, 1–12 for a month or the last
/// month of a year-to-date figure). Periods order by frequency, then year,
/// then number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    // Field order is the sort order: all periods of one frequency sort
    // together, so a range of annual periods is contiguous in an index.
    frequency: Frequency,
    year: u16,
    number: u8,
}

impl Period {
    pub const MIN_YEAR: i32 = 1900;
    pub const MAX_YEAR: i32 = 2100;

    /// Checks the year and the sub-period number; a violation names the bad
    /// field (`year` or `number`).
    pub fn new(year: i32, frequency: Frequency, number: i32) -> Result<Self, FieldViolation> {
        if !(Self::MIN_YEAR..=Self::MAX_YEAR).contains(&year) {
            return Err(FieldViolation::new(
                "year",
                format!(
                    "year {year} is outside {} to {}",
                    Self::MIN_YEAR,
                    Self::MAX_YEAR
                ),
            ));
        }
        let range = match frequency {
            Frequency::Annual => 0..=0,
            Frequency::Quarterly => 1..=4,
            Frequency::Monthly | Frequency::YearToDate => 1..=12,
        };
        if !range.contains(&number) {
            let what = match frequency {
                Frequency::Annual => "an annual period takes number 0",
                Frequency::Quarterly => "a quarterly period takes a quarter, 1 to 4",
                Frequency::Monthly => "a monthly period takes a month, 1 to 12",
                Frequency::YearToDate => "a year-to-date period takes its last month, 1 to 12",
            };
            return Err(FieldViolation::new(
                "number",
                format!("{what}; got {number}"),
            ));
        }
        // Both fit: the ranges were checked above.
        Ok(Period {
            frequency,
            year: year as u16,
            number: number as u8,
        })
    }

    /// The earliest and the latest period of a frequency.
    pub fn bounds(frequency: Frequency) -> (Period, Period) {
        let (first, last) = match frequency {
            Frequency::Annual => (0, 0),
            Frequency::Quarterly => (1, 4),
            Frequency::Monthly | Frequency::YearToDate => (1, 12),
        };
        let at = |year: i32, number| Period {
            frequency,
            year: year as u16,
            number,
        };
        (at(Self::MIN_YEAR, first), at(Self::MAX_YEAR, last))
    }

    pub fn year(&self) -> u16 {
        self.year
    }
    pub fn frequency(&self) -> Frequency {
        self.frequency
    }
    /// Quarter, month or last month; 0 for annual.
    pub fn number(&self) -> u8 {
        self.number
    }
}

impl fmt::Debug for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.frequency {
            Frequency::Annual => write!(f, "{}", self.year),
            Frequency::Quarterly => write!(f, "{}-Q{}", self.year, self.number),
            Frequency::Monthly => write!(f, "{}-{:02}", self.year, self.number),
            Frequency::YearToDate => write!(f, "{}-YTD{:02}", self.year, self.number),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_must_match_the_frequency() {
        assert!(Period::new(2022, Frequency::Annual, 0).is_ok());
        assert_eq!(
            Period::new(2022, Frequency::Annual, 1).unwrap_err().field,
            "number"
        );
        assert!(Period::new(2022, Frequency::Quarterly, 4).is_ok());
        assert!(Period::new(2022, Frequency::Quarterly, 5).is_err());
        assert!(Period::new(2022, Frequency::Monthly, 12).is_ok());
        assert!(Period::new(2022, Frequency::Monthly, 0).is_err());
        assert!(Period::new(2023, Frequency::YearToDate, 11).is_ok());
        assert_eq!(
            Period::new(1800, Frequency::Annual, 0).unwrap_err().field,
            "year"
        );
    }
}
