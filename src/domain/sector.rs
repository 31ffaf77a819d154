//! The sector taxonomy and the mapping from HS chapters onto it. Depends on
//! nothing else in the crate.

use std::fmt;

/// A sector of economic cooperation. The HS chapter → sector mapping is
/// [`Sector::of_hs_chapter`]; the services sectors have no HS chapter.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Sector {
    AgricultureFood,
    Energy,
    MiningMetals,
    Chemicals,
    MachineryElectronics,
    Textiles,
    ConstructionInfrastructure,
    TransportLogistics,
    DigitalEconomy,
    FinanceInvestment,
    Tourism,
    Healthcare,
    GreenDevelopment,
    Other,
}

impl Sector {
    /// Every sector, in taxonomy order.
    pub const ALL: [Sector; 14] = [
        Sector::AgricultureFood,
        Sector::Energy,
        Sector::MiningMetals,
        Sector::Chemicals,
        Sector::MachineryElectronics,
        Sector::Textiles,
        Sector::ConstructionInfrastructure,
        Sector::TransportLogistics,
        Sector::DigitalEconomy,
        Sector::FinanceInvestment,
        Sector::Tourism,
        Sector::Healthcare,
        Sector::GreenDevelopment,
        Sector::Other,
    ];

    /// The sector of an HS chapter (1 to 99):
    ///
    /// | chapters | sector |
    /// |---|---|
    /// | 01–24 | agriculture & food |
    /// | 25–26, 71–83 | mining & metals |
    /// | 27 | energy |
    /// | 28–29, 31–40 | chemicals |
    /// | 30 | healthcare |
    /// | 41–43, 50–67 | textiles (incl. leather, clothing, footwear) |
    /// | 68–70 | construction & infrastructure |
    /// | 84–85, 90–92 | machinery & electronics |
    /// | 86–89 | transport & logistics |
    /// | 44–49, 93–99 | other |
    pub fn of_hs_chapter(chapter: u8) -> Sector {
        match chapter {
            1..=24 => Sector::AgricultureFood,
            25..=26 | 71..=83 => Sector::MiningMetals,
            27 => Sector::Energy,
            28..=29 | 31..=40 => Sector::Chemicals,
            30 => Sector::Healthcare,
            41..=43 | 50..=67 => Sector::Textiles,
            68..=70 => Sector::ConstructionInfrastructure,
            84..=85 | 90..=92 => Sector::MachineryElectronics,
            86..=89 => Sector::TransportLogistics,
            _ => Sector::Other,
        }
    }

    /// A short human name, e.g. "mining & metals".
    pub fn name(self) -> &'static str {
        match self {
            Sector::AgricultureFood => "agriculture & food",
            Sector::Energy => "energy",
            Sector::MiningMetals => "mining & metals",
            Sector::Chemicals => "chemicals",
            Sector::MachineryElectronics => "machinery & electronics",
            Sector::Textiles => "textiles",
            Sector::ConstructionInfrastructure => "construction & infrastructure",
            Sector::TransportLogistics => "transport & logistics",
            Sector::DigitalEconomy => "e-commerce & digital economy",
            Sector::FinanceInvestment => "finance & investment",
            Sector::Tourism => "tourism",
            Sector::Healthcare => "healthcare",
            Sector::GreenDevelopment => "green development",
            Sector::Other => "other",
        }
    }
}

impl fmt::Display for Sector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hs_chapters_map_as_documented() {
        assert_eq!(Sector::of_hs_chapter(27), Sector::Energy);
        assert_eq!(Sector::of_hs_chapter(26), Sector::MiningMetals);
        assert_eq!(Sector::of_hs_chapter(72), Sector::MiningMetals);
        assert_eq!(Sector::of_hs_chapter(30), Sector::Healthcare);
        assert_eq!(Sector::of_hs_chapter(85), Sector::MachineryElectronics);
        assert_eq!(Sector::of_hs_chapter(87), Sector::TransportLogistics);
        assert_eq!(Sector::of_hs_chapter(61), Sector::Textiles);
        assert_eq!(Sector::of_hs_chapter(10), Sector::AgricultureFood);
        assert_eq!(Sector::of_hs_chapter(97), Sector::Other);
    }
}
