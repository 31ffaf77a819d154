//! Reading what the views keep in the store: a pair's pages and runs,
//! decoded, through a [`PageStore`]; and [`MemoryPages`], a store in memory.
//!
//! Depends only on the views' page format.

use super::codec::{page_key, pair_prefix};
use super::index::{FigureKey, Revision};
use super::page::{
    decode_page, decode_page_values, CheckpointBatch, Entry, KeyValue, PageStore, Unreadable,
    PAGE_PREFIX, RUN_PREFIX,
};
use crate::domain::Country;
use std::collections::BTreeMap;
use std::ops::Bound;

/// Calls `each` with every revision in the pages of one pair whose key is in
/// `bounds`, in (key, sequence) order.
pub(super) fn read_pages(
    pages: &dyn PageStore,
    reporter: Country,
    partner: Country,
    bounds: (Bound<FigureKey>, Bound<FigureKey>),
    each: &mut dyn FnMut(FigureKey, Revision) -> bool,
) -> Result<(), Unreadable> {
    let from = match bounds.0 {
        Bound::Unbounded => None,
        Bound::Included(k) | Bound::Excluded(k) => Some(k),
    };
    scan_pages(pages, reporter, partner, from, &mut |_, entries| {
        for (key, revision) in entries {
            if !bounds.1.admits_as_end(&key) {
                return false;
            }
            if bounds.0.admits_as_start(&key) && !each(key, revision) {
                return false;
            }
        }
        true
    })
}

/// One run page: its key, its size in bytes and its revisions.
pub(super) type Run = (Vec<u8>, usize, Vec<Entry>);

/// Every run page of one pair, oldest first: its key, its size in bytes and
/// its revisions in (key, sequence) order.
pub(super) fn read_runs(
    pages: &dyn PageStore,
    reporter: Country,
    partner: Country,
) -> Result<Vec<Run>, Unreadable> {
    let prefix = pair_prefix(RUN_PREFIX, reporter, partner);
    let mut end = prefix.to_vec();
    end.push(0xff);
    let mut runs = Vec::new();
    let mut failed = None;
    pages.scan(&prefix, &end, &mut |key, value| match decode_page(value) {
        Ok(entries) => {
            runs.push((key.to_vec(), value.len(), entries));
            true
        }
        Err(e) => {
            failed = Some(e);
            false
        }
    })?;
    failed.map_or(Ok(runs), Err)
}

/// Calls `each` with the key, sequence and value (`None`: a retraction) of
/// the revisions in the runs of one pair, without decoding their details;
/// each run page (in key order) is left as soon as `each` returns false.
pub(super) fn read_run_values(
    pages: &dyn PageStore,
    reporter: Country,
    partner: Country,
    each: &mut dyn FnMut(&FigureKey, u64, Option<u128>) -> bool,
) -> Result<(), Unreadable> {
    let prefix = pair_prefix(RUN_PREFIX, reporter, partner);
    let mut end = prefix.to_vec();
    end.push(0xff);
    let mut failed = None;
    pages.scan(&prefix, &end, &mut |_, value| {
        let decoded = decode_page_values(value, &mut |key, sequence, value| {
            each(key, sequence, value)
        });
        match decoded {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    })?;
    failed.map_or(Ok(()), Err)
}

/// Calls `each` with the key and the decoded revisions of every page of one
/// pair, in key order, from the page that `from` falls in (the pair's first
/// page when `None`), until it returns false.
pub(super) fn scan_pages(
    pages: &dyn PageStore,
    reporter: Country,
    partner: Country,
    from: Option<FigureKey>,
    each: &mut dyn FnMut(&[u8], Vec<Entry>) -> bool,
) -> Result<(), Unreadable> {
    let mut failed = None;
    scan_page_bytes(
        pages,
        reporter,
        partner,
        from,
        &mut |key, value| match decode_page(value) {
            Ok(entries) => each(key, entries),
            Err(e) => {
                failed = Some(e);
                false
            }
        },
    )?;
    failed.map_or(Ok(()), Err)
}

/// Calls `each` with the key and the bytes of every page of one pair, as
/// [`scan_pages`] does with their revisions.
fn scan_page_bytes(
    pages: &dyn PageStore,
    reporter: Country,
    partner: Country,
    from: Option<FigureKey>,
    each: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) -> Result<(), Unreadable> {
    let prefix = pair_prefix(PAGE_PREFIX, reporter, partner);
    let mut end = prefix.to_vec();
    end.push(0xff);
    // The page holding `from` may begin before it.
    let start = match from {
        None => prefix.to_vec(),
        Some(k) => {
            let at = page_key(reporter, partner, &k, 0);
            match pages.floor(&prefix, &at)? {
                Some((key, _)) => key,
                None => at,
            }
        }
    };
    pages.scan(&start, &end, each)
}

/// Calls `each` with the key, sequence and value (`None`: a retraction) of
/// every revision in the pages of one pair whose key is in `bounds`, in
/// (key, sequence) order, without decoding their details.
pub(super) fn read_page_values(
    pages: &dyn PageStore,
    reporter: Country,
    partner: Country,
    bounds: (Bound<FigureKey>, Bound<FigureKey>),
    each: &mut dyn FnMut(&FigureKey, u64, Option<u128>),
) -> Result<(), Unreadable> {
    let from = match bounds.0 {
        Bound::Unbounded => None,
        Bound::Included(k) | Bound::Excluded(k) => Some(k),
    };
    let mut failed = None;
    let mut ended = false;
    scan_page_bytes(pages, reporter, partner, from, &mut |_, value| {
        let decoded = decode_page_values(value, &mut |key, sequence, value| {
            if !bounds.1.admits_as_end(key) {
                ended = true;
                return false;
            }
            if bounds.0.admits_as_start(key) {
                each(key, sequence, value);
            }
            true
        });
        if let Err(e) = decoded {
            failed = Some(e);
            return false;
        }
        !ended
    })?;
    failed.map_or(Ok(()), Err)
}

/// Where a key stands against a range's bound.
trait BoundCheck {
    /// For a start bound: whether `key` is at or after it.
    fn admits_as_start(&self, key: &FigureKey) -> bool;
    /// For an end bound: whether `key` is at or before it.
    fn admits_as_end(&self, key: &FigureKey) -> bool;
}

impl BoundCheck for Bound<FigureKey> {
    fn admits_as_start(&self, key: &FigureKey) -> bool {
        match self {
            Bound::Unbounded => true,
            Bound::Included(s) => key >= s,
            Bound::Excluded(s) => key > s,
        }
    }
    fn admits_as_end(&self, key: &FigureKey) -> bool {
        match self {
            Bound::Unbounded => true,
            Bound::Included(e) => key <= e,
            Bound::Excluded(e) => key < e,
        }
    }
}

/// Pages kept in memory: for the views' own tests, and for views that no
/// store was attached to.
#[derive(Default)]
pub(crate) struct MemoryPages {
    map: std::sync::Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl PageStore for MemoryPages {
    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        each: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), Unreadable> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in map.range::<[u8], _>((Bound::Included(from), Bound::Excluded(to))) {
            if !each(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn floor(&self, lowest: &[u8], key: &[u8]) -> Result<Option<KeyValue>, Unreadable> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map
            .range::<[u8], _>((Bound::Included(lowest), Bound::Included(key)))
            .next_back()
            .map(|(k, v)| (k.clone(), v.clone())))
    }

    fn put(&self, puts: Vec<KeyValue>) -> Result<(), Unreadable> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.extend(puts);
        Ok(())
    }

    fn apply(&self, batch: CheckpointBatch) -> Result<(), Unreadable> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        for k in batch.deletes {
            map.remove(&k);
        }
        map.extend(batch.puts);
        Ok(())
    }

    fn sync(&self) -> Result<(), Unreadable> {
        Ok(())
    }
}
