//! Reading one pair's figures: its pages, its runs and the overlays merged
//! (`Index::pair_figures`, windowed for StreamTradeRecords), or folded to
//! their values at a snapshot without copying revisions
//! (`Index::pair_values_at`, for sums the rollups do not describe).
//!
//! Depends only on the domain and the index's data.

use super::index::{FigureKey, Figures, Index, Overlay, Revision};
use super::page::Unreadable;
use super::stored::{read_page_values, read_pages, read_run_values, read_runs};
use crate::domain::{Country, TradeFigureKey};
use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};

impl Index {
    /// The overlays read as part of the views: the frozen one of a
    /// checkpoint in progress, if any, then the active one.
    fn overlays(&self) -> impl Iterator<Item = &Overlay> {
        self.frozen
            .iter()
            .map(|(_, f)| &**f)
            .chain(std::iter::once(&self.active))
    }

    /// Every revision of one pair's figures with keys in `bounds`, in key
    /// order: from the pages, then the overlays (a revision is in a page
    /// and the frozen overlay at once while a checkpoint is installed).
    pub(crate) fn pair_figures(
        &self,
        reporter: Country,
        partner: Country,
        bounds: (Bound<FigureKey>, Bound<FigureKey>),
    ) -> Result<Vec<(FigureKey, Vec<Revision>)>, Unreadable> {
        Ok(self
            .pair_figures_window(reporter, partner, bounds, usize::MAX)?
            .0)
    }

    /// The first `max_keys` figures of [`Index::pair_figures`], and whether
    /// there are more.
    pub(crate) fn pair_figures_window(
        &self,
        reporter: Country,
        partner: Country,
        bounds: (Bound<FigureKey>, Bound<FigureKey>),
        max_keys: usize,
    ) -> Result<(Figures, bool), Unreadable> {
        // The pages arrive in key order: grouped as they come, no map.
        let mut out: Figures = Vec::new();
        let mut cut = None;
        let paged = self.pair(reporter, partner).is_some_and(|p| p.folded > 0);
        if paged {
            read_pages(&*self.pages, reporter, partner, bounds, &mut |k, r| {
                let len = out.len();
                match out.last_mut() {
                    Some((last, revisions)) if *last == k => revisions.push(r),
                    _ if len >= max_keys => {
                        cut = Some(k);
                        return false;
                    }
                    _ => out.push((k, vec![r])),
                }
                true
            })?;
        }
        // Past a cut, no key can be among the first `max_keys`.
        let end = cut.map_or(bounds.1, Bound::Excluded);
        // Revisions newer than the pages': the runs (in sequence order),
        // then the overlays.
        let mut newer: BTreeMap<FigureKey, Vec<Revision>> = BTreeMap::new();
        let mut add = |key: FigureKey, revision: &Revision| {
            let have = newer.entry(key).or_default();
            if have.last().is_none_or(|r| r.sequence < revision.sequence) {
                have.push(revision.clone());
            }
        };
        if paged {
            for (_, _, run) in read_runs(&*self.pages, reporter, partner)? {
                for (key, revision) in &run {
                    if (bounds.0, end).contains(key) {
                        add(*key, revision);
                    }
                }
            }
        }
        for overlay in self.overlays() {
            let Some(o) = overlay.pairs.get(&(reporter, partner)) else {
                continue;
            };
            // One more than a window: the result then tells whether there
            // are more.
            for (key, revisions) in o
                .figures
                .range((bounds.0, end))
                .take(max_keys.saturating_add(1))
            {
                for r in revisions {
                    add(*key, r);
                }
            }
        }
        if !newer.is_empty() {
            out = merge_newer(out, newer);
        }
        let more = cut.is_some() || out.len() > max_keys;
        out.truncate(max_keys);
        Ok((out, more))
    }

    /// Calls `each` with the value as of `snapshot` of every figure of one
    /// pair with its key in `bounds`, in key order, skipping figures not
    /// stored or retracted then: the fold of [`Index::pair_figures`] without
    /// copying the revisions or decoding their details (an as-of view reads
    /// every revision of the pair's period range through it).
    pub(crate) fn pair_values_at(
        &self,
        reporter: Country,
        partner: Country,
        bounds: (Bound<FigureKey>, Bound<FigureKey>),
        snapshot: u64,
        each: &mut dyn FnMut(&FigureKey, u128),
    ) -> Result<(), Unreadable> {
        // The latest revision at or before the snapshot is the one with the
        // highest sequence of any source, whatever the order they are read
        // in: first that of the runs and overlays (few keys), kept per key.
        let mut newer: BTreeMap<FigureKey, (u64, Option<u128>)> = BTreeMap::new();
        let mut add = |key: &FigureKey, sequence: u64, value: Option<u128>| {
            if sequence <= snapshot {
                let slot = newer.entry(*key).or_insert((0, None));
                if sequence >= slot.0 {
                    *slot = (sequence, value);
                }
            }
        };
        let paged = self.pair(reporter, partner).is_some_and(|p| p.folded > 0);
        if paged {
            for (_, _, run) in read_runs(&*self.pages, reporter, partner)? {
                for (key, revision) in &run {
                    if bounds.contains(key) {
                        add(key, revision.sequence, revision.current_value());
                    }
                }
            }
        }
        for overlay in self.overlays() {
            if let Some(o) = overlay.pairs.get(&(reporter, partner)) {
                for (key, revisions) in o.figures.range(bounds) {
                    for r in revisions {
                        add(key, r.sequence, r.current_value());
                    }
                }
            }
        }
        // Then the pages, in key order, merged with those as they pass.
        let mut newer = newer.into_iter().peekable();
        let mut emit = |key: &FigureKey, (sequence, value): (u64, Option<u128>)| {
            while let Some((k, v)) = newer.next_if(|(k, _)| k < key) {
                if let (_, Some(value)) = v {
                    each(&k, value);
                }
            }
            let value = match newer.next_if(|(k, _)| k == key) {
                Some((_, (s, v))) if s >= sequence => v,
                _ => value,
            };
            if let Some(value) = value {
                each(key, value);
            }
        };
        if paged {
            // The current key and its latest revision at or before the
            // snapshot (sequence 0, no value: none yet).
            let mut current: Option<(FigureKey, (u64, Option<u128>))> = None;
            read_page_values(
                &*self.pages,
                reporter,
                partner,
                bounds,
                &mut |key, sequence, value| match &mut current {
                    Some((k, latest)) if k == key => {
                        if sequence <= snapshot {
                            *latest = (sequence, value);
                        }
                    }
                    _ => {
                        if let Some((k, latest)) = current.take() {
                            emit(&k, latest);
                        }
                        let latest = if sequence <= snapshot {
                            (sequence, value)
                        } else {
                            (0, None)
                        };
                        current = Some((*key, latest));
                    }
                },
            )?;
            if let Some((k, latest)) = current {
                emit(&k, latest);
            }
        }
        for (k, (_, v)) in newer {
            if let Some(value) = v {
                each(&k, value);
            }
        }
        Ok(())
    }

    /// Whether the figure of `natural` is current: stored, and its latest
    /// revision not a retraction.
    /// The sequence of the first record of a figure (whose feed owns it),
    /// if it was ever recorded.
    /// Asked for every record of a feed where other feeds write the same
    /// pair and level: the lowest sequence of a record (not a retraction)
    /// of the key, from the overlays, then the pages and runs read for their
    /// keys and sequences only (no revision is copied, no details decoded).
    pub(crate) fn figure_first_record(
        &self,
        natural: &TradeFigureKey,
    ) -> Result<Option<u64>, Unreadable> {
        let key = FigureKey::of(natural);
        let (reporter, partner) = (natural.reporter(), natural.partner());
        let mut first: Option<u64> = None;
        let mut see = |sequence: u64| {
            first = Some(first.map_or(sequence, |f| f.min(sequence)));
        };
        for overlay in self.overlays() {
            let revisions = overlay
                .pairs
                .get(&(reporter, partner))
                .and_then(|o| o.figures.get(&key));
            if let Some(r) = revisions.and_then(|rs| rs.iter().find(|r| r.details.is_some())) {
                see(r.sequence);
            }
        }
        if self.pair(reporter, partner).is_some_and(|p| p.folded > 0) {
            let one = (Bound::Included(key), Bound::Included(key));
            read_page_values(
                &*self.pages,
                reporter,
                partner,
                one,
                &mut |_, sequence, value| {
                    if value.is_some() {
                        see(sequence);
                    }
                },
            )?;
            read_run_values(
                &*self.pages,
                reporter,
                partner,
                &mut |k, sequence, value| {
                    if *k == key && value.is_some() {
                        see(sequence);
                    }
                    // Past the key, the rest of this run page holds none of it.
                    *k <= key
                },
            )?;
        }
        Ok(first)
    }

    pub(crate) fn figure_is_current(&self, natural: &TradeFigureKey) -> Result<bool, Unreadable> {
        let key = FigureKey::of(natural);
        let found = self.pair_figures(
            natural.reporter(),
            natural.partner(),
            (Bound::Included(key), Bound::Included(key)),
        )?;
        Ok(found
            .first()
            .and_then(|(_, revisions)| revisions.last())
            .is_some_and(|r| r.current_value().is_some()))
    }
}

/// `stored` (in key order) with the `newer` revisions of each key after its
/// own, each sequence once.
fn merge_newer(stored: Figures, newer: BTreeMap<FigureKey, Vec<Revision>>) -> Figures {
    let mut out = Vec::with_capacity(stored.len() + newer.len());
    let mut newer = newer.into_iter().peekable();
    for (key, mut revisions) in stored {
        while let Some(n) = newer.next_if(|(k, _)| *k < key) {
            out.push(n);
        }
        if let Some((_, more)) = newer.next_if(|(k, _)| *k == key) {
            let last = revisions.last().map_or(0, |r| r.sequence);
            revisions.extend(more.into_iter().filter(|r| r.sequence > last));
        }
        out.push((key, revisions));
    }
    out.extend(newer);
    out
}
