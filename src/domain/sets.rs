//! Sets of countries and of the small enums, as bitmaps: what a request's
//! filter lists become when they are parsed, so that asking whether an item
//! passes costs the same whatever the list held and however it was spelled
//! (repeats, alpha-3 and alpha-2 of one country). Depends only on the domain's
//! value types.

use super::{AgreementKind, AgreementStatus, Country, EventKind, Flow, Sector};
use std::marker::PhantomData;

/// Countries, as a bitmap of the 26 × 26 alpha-2 codes.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct CountrySet([u64; 11]);

impl CountrySet {
    pub fn insert(&mut self, c: Country) {
        let i = c.index();
        self.0[i / 64] |= 1 << (i % 64);
    }

    pub fn contains(&self, c: Country) -> bool {
        let i = c.index();
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// Whether `c` passes a filter of these countries (an empty one passes all).
    pub fn admits(&self, c: Country) -> bool {
        self.is_empty() || self.contains(c)
    }
}

impl FromIterator<Country> for CountrySet {
    fn from_iter<I: IntoIterator<Item = Country>>(items: I) -> Self {
        let mut set = CountrySet::default();
        for c in items {
            set.insert(c);
        }
        set
    }
}

/// A value of a small enum with its bit.
pub trait Bit: Copy {
    /// Below 32.
    fn bit(self) -> u32;
}

macro_rules! bits {
    ($($t:ty),+) => {$(
        impl Bit for $t {
            fn bit(self) -> u32 {
                self as u32
            }
        }
    )+};
}

bits!(Flow, Sector, AgreementKind, AgreementStatus, EventKind);

/// A set of values of a small enum.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BitSet<T> {
    bits: u32,
    of: PhantomData<T>,
}

impl<T> Default for BitSet<T> {
    fn default() -> Self {
        BitSet {
            bits: 0,
            of: PhantomData,
        }
    }
}

impl<T: Bit> BitSet<T> {
    pub fn insert(&mut self, x: T) {
        self.bits |= 1 << x.bit();
    }

    pub fn contains(&self, x: T) -> bool {
        self.bits & (1 << x.bit()) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// Whether `x` passes a filter of these values (an empty one passes all).
    pub fn admits(&self, x: T) -> bool {
        self.is_empty() || self.contains(x)
    }
}

impl<T: Bit> FromIterator<T> for BitSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        let mut set = BitSet::default();
        for x in items {
            set.insert(x);
        }
        set
    }
}

/// Sectors.
pub type SectorSet = BitSet<Sector>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_country_has_its_own_bit() {
        let all: Vec<Country> = rust_iso3166::ALL_ALPHA2
            .iter()
            .map(|c| Country::parse(c).unwrap())
            .collect();
        for (i, c) in all.iter().enumerate() {
            let set: CountrySet = [*c].into_iter().collect();
            for (j, d) in all.iter().enumerate() {
                assert_eq!(set.contains(*d), i == j, "{c} {d}");
            }
        }
        let everything: CountrySet = all.iter().copied().collect();
        assert!(all.iter().all(|c| everything.contains(*c)));
        assert!(CountrySet::default().admits(all[0]));
    }

    #[test]
    fn enum_sets_hold_what_was_put_in() {
        let s: SectorSet = [Sector::Energy, Sector::Other, Sector::Energy]
            .into_iter()
            .collect();
        assert!(s.contains(Sector::Energy) && s.contains(Sector::Other));
        assert!(Sector::ALL
            .iter()
            .filter(|x| s.contains(**x))
            .eq([Sector::Energy, Sector::Other].iter()));
        assert!(BitSet::<Flow>::default().admits(Flow::Import));
    }
}
