//! Random stores for the views' tests: records, revisions and retractions
//! of figures over three countries, every commodity level and both
//! frequencies, with values from nothing to the largest allowed.

use crate::domain::{
    CommodityScope, Country, Event, EventId, FeedName, Flow, Frequency, HsCode, Payload, Period,
    Sector, StoredEvent, Text, Timestamp, TradeFigureKey, TradeRecord, TradeRecordRetracted,
    UsdAmount, MAX_UNITS,
};

/// The three countries the figures are between.
pub(super) fn countries() -> Vec<Country> {
    ["CN", "KZ", "UZ"]
        .iter()
        .map(|c| Country::parse(c).unwrap())
        .collect()
}

/// `n` events with sequences 1 to `n`, deterministic for `seed`: about one in
/// five is a retraction, one value in ten is the largest allowed.
pub(super) fn random_events(n: u64, seed: u64) -> Vec<StoredEvent> {
    let mut draws = seed.wrapping_mul(1 << 32);
    let mut below = |n: usize| {
        draws += 1;
        (xxhash_rust::xxh3::xxh3_64(&draws.to_le_bytes()) % n as u64) as usize
    };
    let countries = countries();
    let scopes: Vec<CommodityScope> = vec![
        CommodityScope::All,
        CommodityScope::Hs(HsCode::parse("27").unwrap()),
        CommodityScope::Hs(HsCode::parse("2711").unwrap()),
        CommodityScope::Hs(HsCode::parse("8471").unwrap()),
        CommodityScope::Hs(HsCode::parse("271111").unwrap()),
        CommodityScope::Sector(Sector::Energy),
        CommodityScope::Sector(Sector::DigitalEconomy),
    ];
    let flows = [
        Flow::Export,
        Flow::Import,
        Flow::ReExport,
        Flow::ReImport,
        Flow::Turnover,
    ];
    let periods: Vec<Period> = [
        (2021, Frequency::Annual, 0),
        (2022, Frequency::Annual, 0),
        (2022, Frequency::Monthly, 3),
    ]
    .iter()
    .map(|(y, f, n)| Period::new(*y, *f, *n).unwrap())
    .collect();
    (1..=n)
        .map(|sequence| {
            let r = below(3);
            let p = (r + 1 + below(2)) % 3;
            let key = TradeFigureKey::new(
                countries[r],
                countries[p],
                flows[below(5)],
                periods[below(3)],
                scopes[below(scopes.len())],
            )
            .unwrap();
            let payload = if below(5) == 0 {
                Payload::TradeRecordRetracted(TradeRecordRetracted {
                    key,
                    reason: Text::parse("test").unwrap(),
                })
            } else {
                let units = if below(10) == 0 {
                    MAX_UNITS
                } else {
                    below(1_000) as i64
                };
                Payload::TradeRecord(TradeRecord {
                    key,
                    value: UsdAmount::new("USD", units, 0).unwrap(),
                    quantity: None,
                    source: Text::parse("test").unwrap(),
                    note: Text::parse("").unwrap(),
                })
            };
            StoredEvent {
                sequence,
                ingested_at: Timestamp::new(0, 0).unwrap(),
                event: Event {
                    id: EventId::parse(&format!("e{sequence}")).unwrap(),
                    feed: FeedName::parse("test").unwrap(),
                    occurred_at: None,
                    payload,
                },
                written_by: None,
            }
        })
        .collect()
}
