//! Who owns what feeds store, as the writer needs to know it: an agreement
//! belongs to the feed that stored its first version, a figure (its natural
//! key) to the feed of its first record. An event that changes what another
//! feed owns needs the `curate` scope (`stage` checks it).
//!
//! In memory the writer keeps every agreement's [`Standing`] (where it is in
//! its lifecycle, and its owner) and [`PairFeeds`]: for each (reporter,
//! partner) pair and commodity level, the feeds that have recorded figures
//! of it, kept in the store as `O` keys written with the log. A feed's
//! record in a pair and level that no other feed writes is its own without
//! a look-up; only where other feeds write too is the figure's first record
//! looked up: in the views and the log, else in the groups written but not
//! yet applied to the views ([`Unpublished`]), else in the group being
//! staged; none of it waits for the publisher.
//!
//! Depends on sled (loading the `O` keys), `layout` and the domain.

use super::layout::{self, PAIR_FEED_PREFIX};
use crate::domain::{CommodityScope, Country, FeedName, Lifecycle, TradeFigureKey};
use std::collections::HashMap;

/// Where an agreement stands, and which feed owns it.
#[derive(Clone, Debug)]
pub(crate) struct Standing {
    pub life: Lifecycle,
    pub owner: FeedName,
}

/// A (reporter, partner) pair at one commodity level: figures at different
/// levels never share a key, so two feeds that write one pair at different
/// levels (a statistics office's totals, a Comtrade load of HS6) never touch
/// each other's figures.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) struct Pair {
    pub reporter: Country,
    pub partner: Country,
    /// 0 all commodities, 2, 4 or 6 HS digits, 7 sector.
    pub level: u8,
}

impl Pair {
    /// Where the figure of `key` is.
    pub(super) fn of(key: &TradeFigureKey) -> Pair {
        let level = match &key.commodity {
            CommodityScope::All => 0,
            CommodityScope::Hs(h) => h.as_str().len() as u8,
            CommodityScope::Sector(_) => 7,
        };
        Pair {
            reporter: key.reporter(),
            partner: key.partner(),
            level,
        }
    }
}

/// xxh3 rather than SipHash: a pair is looked up once per record on the
/// writer thread.
type Hasher = xxhash_rust::xxh3::Xxh3DefaultBuilder;

/// The feeds that have recorded figures of each pair and level.
#[derive(Default, Debug)]
pub(super) struct PairFeeds(HashMap<Pair, Vec<FeedName>, Hasher>);

impl PairFeeds {
    /// The feeds that have recorded figures of `pair` (none for a new one).
    pub(super) fn feeds(&self, pair: &Pair) -> &[FeedName] {
        self.0.get(pair).map_or(&[], Vec::as_slice)
    }

    /// Records that `feed` has recorded figures of `pair`.
    pub(super) fn insert(&mut self, pair: Pair, feed: FeedName) {
        let feeds = self.0.entry(pair).or_default();
        if !feeds.contains(&feed) {
            feeds.push(feed);
        }
    }

    /// How many (pair, feed) there are.
    pub(super) fn len(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }

    /// Reads the `O` keys; a key or value that does not read back is an
    /// error (the caller rebuilds them from the log).
    pub(super) fn load(tree: &sled::Tree) -> Result<PairFeeds, String> {
        let mut out = PairFeeds::default();
        for item in tree.scan_prefix([PAIR_FEED_PREFIX]) {
            let (k, v) = item.map_err(|e| e.to_string())?;
            let (pair, feed, _) = parse_pair_feed(&k, &v)?;
            out.insert(pair, feed);
        }
        Ok(out)
    }
}

/// The pair, feed and first-record sequence of a pair-feed key and value.
pub(super) fn parse_pair_feed(k: &[u8], v: &[u8]) -> Result<(Pair, FeedName, u64), String> {
    let (reporter, partner, level, feed) = layout::parse_pair_feed_key(k)?;
    if !matches!(level, 0 | 2 | 4 | 6 | 7) {
        return Err(format!("pair-feed key {k:?} of an unknown level {level}"));
    }
    let seq = layout::unseal(v, "pair-feed key")?;
    let seq = <[u8; 8]>::try_from(seq)
        .map(u64::from_be_bytes)
        .map_err(|_| format!("pair-feed key {k:?} with a value of {} bytes", seq.len()))?;
    let country = |c: &str| Country::parse(c).map_err(|e| format!("pair-feed key {k:?}: {e}"));
    let feed = FeedName::parse(feed).map_err(|e| format!("pair-feed key {k:?}: {e}"))?;
    let pair = Pair {
        reporter: country(reporter)?,
        partner: country(partner)?,
        level,
    };
    Ok((pair, feed, seq))
}

/// The pairs and feeds a group adds, in order, so that a job that fails can
/// take back its own.
#[derive(Default)]
pub(super) struct NewPairFeeds {
    by_pair: HashMap<Pair, Vec<FeedName>, Hasher>,
    /// (pair, feed, sequence of the first record), in staging order.
    pub order: Vec<(Pair, FeedName, u64)>,
}

impl NewPairFeeds {
    pub(super) fn feeds(&self, pair: &Pair) -> &[FeedName] {
        self.by_pair.get(pair).map_or(&[], Vec::as_slice)
    }

    pub(super) fn push(&mut self, pair: Pair, feed: FeedName, sequence: u64) {
        self.by_pair.entry(pair).or_default().push(feed.clone());
        self.order.push((pair, feed, sequence));
    }

    /// Takes back everything after the first `keep` additions.
    pub(super) fn truncate(&mut self, keep: usize) {
        while self.order.len() > keep {
            if let Some((pair, _, _)) = self.order.pop() {
                if let Some(feeds) = self.by_pair.get_mut(&pair) {
                    feeds.pop();
                }
            }
        }
    }
}

/// The trade records of groups that are written but may not be applied to
/// the views yet: where a figure's first record is while the views cannot
/// tell. The writer adds each group it writes and drops those the
/// publisher has applied, so that looking up a figure's owner never waits
/// for the publisher. A group's index is built only when a look-up needs it.
#[derive(Default)]
pub(super) struct Unpublished {
    groups: std::collections::VecDeque<Written>,
}

/// One written group's trade records.
struct Written {
    /// Its last sequence: applied once the durable sequence reaches it.
    last: u64,
    /// Its feeds, which `records` point into (a group has a few).
    feeds: Vec<FeedName>,
    /// Each trade record's key and feed, in sequence order.
    records: Vec<(TradeFigureKey, u16)>,
    /// Key → its first record in `records`, once asked for.
    index: Option<HashMap<TradeFigureKey, usize, Hasher>>,
}

impl Unpublished {
    /// Adds a written group: its last sequence and its events' payloads
    /// and feeds, in order.
    pub(super) fn push<'a>(
        &mut self,
        last: u64,
        events: impl Iterator<Item = (&'a crate::domain::Payload, &'a FeedName)>,
    ) {
        let mut written = Written {
            last,
            feeds: Vec::new(),
            records: Vec::new(),
            index: None,
        };
        for (payload, feed) in events {
            if let crate::domain::Payload::TradeRecord(r) = payload {
                let at = match written.feeds.iter().rposition(|f| f == feed) {
                    Some(i) => i,
                    None => {
                        written.feeds.push(feed.clone());
                        written.feeds.len() - 1
                    }
                };
                // A group has far fewer than 65,536 feeds; beyond, the
                // record is kept under the last one it can name.
                written
                    .records
                    .push((r.key, u16::try_from(at).unwrap_or(u16::MAX)));
            }
        }
        if !written.records.is_empty() {
            self.groups.push_back(written);
        }
    }

    /// Drops the groups the views have applied (up to `applied`).
    pub(super) fn prune(&mut self, applied: u64) {
        while self.groups.front().is_some_and(|g| g.last <= applied) {
            self.groups.pop_front();
        }
    }

    /// The feed of the first record of `key` among these groups.
    pub(super) fn first_feed(&mut self, key: &TradeFigureKey) -> Option<&FeedName> {
        for g in self.groups.iter_mut() {
            let records = &g.records;
            let index = g.index.get_or_insert_with(|| {
                let mut index = HashMap::with_capacity_and_hasher(records.len(), Hasher::default());
                for (i, (k, _)) in records.iter().enumerate() {
                    index.entry(*k).or_insert(i);
                }
                index
            });
            if let Some(&i) = index.get(key) {
                let feed = usize::from(g.records[i].1);
                return g.feeds.get(feed).or(g.feeds.last());
            }
        }
        None
    }
}

/// The `O` key and sealed value of a (pair, feed) first recorded at `sequence`.
pub(super) fn pair_feed_entry(pair: &Pair, feed: &FeedName, sequence: u64) -> (Vec<u8>, Vec<u8>) {
    (
        layout::pair_feed_key(
            pair.reporter.alpha2(),
            pair.partner.alpha2(),
            pair.level,
            feed.as_str(),
        ),
        layout::seal(sequence.to_be_bytes().to_vec()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(a: &str, b: &str) -> Pair {
        Pair {
            reporter: Country::parse(a).unwrap(),
            partner: Country::parse(b).unwrap(),
            level: 4,
        }
    }

    #[test]
    fn a_group_takes_back_the_pairs_of_a_failed_job() {
        let feed = |f: &str| FeedName::parse(f).unwrap();
        let mut added = NewPairFeeds::default();
        added.push(pair("CN", "KZ"), feed("a"), 1);
        let mark = added.order.len();
        added.push(pair("CN", "KZ"), feed("b"), 2);
        added.push(pair("CN", "UZ"), feed("b"), 3);
        added.truncate(mark);
        assert_eq!(added.feeds(&pair("CN", "KZ")), &[feed("a")]);
        assert!(added.feeds(&pair("CN", "UZ")).is_empty());
        assert_eq!(added.order.len(), 1);
    }

    #[test]
    fn unpublished_groups_tell_the_first_feed_until_applied() {
        use crate::domain::{
            CommodityScope, Flow, Frequency, Payload, Period, Text, TradeRecord, UsdAmount,
        };
        let record = |year| {
            let key = TradeFigureKey::new(
                Country::parse("CN").unwrap(),
                Country::parse("KZ").unwrap(),
                Flow::Export,
                Period::new(year, Frequency::Annual, 0).unwrap(),
                CommodityScope::All,
            )
            .unwrap();
            Payload::TradeRecord(TradeRecord {
                key,
                value: UsdAmount::new("USD", 1, 0).unwrap(),
                quantity: None,
                source: Text::parse("s").unwrap(),
                note: Text::parse("").unwrap(),
            })
        };
        let key = |p: &Payload| match p {
            Payload::TradeRecord(r) => r.key,
            _ => unreachable!(),
        };
        let (a, b) = (FeedName::parse("a").unwrap(), FeedName::parse("b").unwrap());
        let (r2020, r2021) = (record(2020), record(2021));
        let mut u = Unpublished::default();
        u.push(2, [(&r2020, &a), (&r2021, &b)].into_iter());
        u.push(3, [(&r2020, &b)].into_iter());
        assert_eq!(
            u.first_feed(&key(&r2020)),
            Some(&a),
            "the oldest group first"
        );
        assert_eq!(u.first_feed(&key(&r2021)), Some(&b));
        u.prune(2);
        assert_eq!(u.first_feed(&key(&r2020)), Some(&b));
        assert_eq!(u.first_feed(&key(&r2021)), None);
        u.prune(3);
        assert!(u.first_feed(&key(&r2020)).is_none());
    }

    #[test]
    fn pair_feed_keys_read_back_and_damage_is_an_error() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let (k, v) = pair_feed_entry(&pair("CN", "KZ"), &FeedName::parse("mofcom").unwrap(), 7);
        tree.insert(&k, v.clone()).unwrap();
        let loaded = PairFeeds::load(&tree).unwrap();
        assert_eq!(
            loaded.feeds(&pair("CN", "KZ")),
            &[FeedName::parse("mofcom").unwrap()]
        );
        assert_eq!(loaded.len(), 1);
        let mut bad = v;
        bad[0] ^= 1;
        tree.insert(&k, bad).unwrap();
        assert!(PairFeeds::load(&tree).is_err());
    }
}
