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
//! looked up.
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

/// The feeds that have recorded figures of each pair and level.
#[derive(Default, Debug)]
pub(super) struct PairFeeds(HashMap<Pair, Vec<FeedName>>);

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
            let (reporter, partner, level, feed) = layout::parse_pair_feed_key(&k)?;
            if !matches!(level, 0 | 2 | 4 | 6 | 7) {
                return Err(format!("pair-feed key {k:?} of an unknown level {level}"));
            }
            let seq = layout::unseal(&v, "pair-feed key")?;
            if seq.len() != 8 {
                return Err(format!(
                    "pair-feed key {k:?} with a value of {} bytes",
                    seq.len()
                ));
            }
            let country =
                |c: &str| Country::parse(c).map_err(|e| format!("pair-feed key {k:?}: {e}"));
            let feed = FeedName::parse(feed).map_err(|e| format!("pair-feed key {k:?}: {e}"))?;
            let pair = Pair {
                reporter: country(reporter)?,
                partner: country(partner)?,
                level,
            };
            out.insert(pair, feed);
        }
        Ok(out)
    }
}

/// The pairs and feeds a group adds, in order, so that a job that fails can
/// take back its own.
#[derive(Default)]
pub(super) struct NewPairFeeds {
    by_pair: HashMap<Pair, Vec<FeedName>>,
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
