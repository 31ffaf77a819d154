//! What `caravan verify` and the Verify RPC check beyond the store's own
//! keys (`storage::check`): that the views a server answers from (restored
//! from the newest checkpoint, then the log after it) say exactly what views
//! rebuilt from the log alone say, at one snapshot sequence. The rebuilt
//! views live in a scratch store (the log imported, as `caravan restore`
//! does), so memory stays bounded by the views' own limits.
//!
//! Compared at the snapshot: every figure of every pair (value, revision,
//! sequence, source, quantity, note), in one pass over each side's pages,
//! merged by key; the totals of every reporter, partner and period at each
//! frequency and commodity level that holds figures; every agreement's state.
//!
//! Depends on the store facade, the views and `projection`.

use crate::domain::{Country, Frequency, SectorSet};
use crate::error::Error;
use crate::ops::projection::ViewsOnly;
use crate::storage::{Finding, Store, StoreConfig, StoreHandle};
use crate::views::{
    aggregate, agreement_state, figure_at, CommodityLevel, FigureAt, FigureFilter, FigureKey,
    GroupDim, PeriodRange, Views,
};
use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

/// Figure keys read per read lock, from each side.
const FIGURES_PER_READ: usize = 4096;
/// Findings about the views reported before the rest is summed up.
const MAX_VIEW_FINDINGS: usize = 20;
/// Groups one totals comparison may build.
const MAX_GROUPS: usize = 10_000_000;

/// Events imported into the scratch store per read of the live log.
const IMPORT_BATCH: usize = 4096;

/// Builds views from the log of `store` up to `snapshot` in a new store in
/// `scratch`, and compares `views` with them at `snapshot`.
pub(crate) async fn views_against_log(
    store: &StoreHandle,
    views: &Arc<Views>,
    snapshot: u64,
    scratch: &Path,
) -> Result<(Vec<Finding>, String), Error> {
    let began = std::time::Instant::now();
    let dir = scratch.join("rebuilt");
    let source = store.clone();
    let import_dir = dir.clone();
    tokio::task::spawn_blocking(move || {
        let mut after = 0u64;
        let mut buffer: std::vec::IntoIter<Vec<u8>> = Vec::new().into_iter();
        let mut failed = None;
        let mut events = std::iter::from_fn(|| {
            if failed.is_some() {
                return None;
            }
            if let Some(e) = buffer.next() {
                return Some(Ok(e));
            }
            match source.raw_events_after(after, snapshot, IMPORT_BATCH) {
                Ok(batch) if batch.is_empty() => None,
                Ok(batch) => {
                    after += batch.len() as u64;
                    buffer = batch.into_iter();
                    buffer.next().map(Ok)
                }
                Err(e) => {
                    failed = Some(());
                    Some(Err(e))
                }
            }
        });
        crate::storage::import(
            &import_dir,
            &mut events,
            crate::storage::DEFAULT_CACHE_BYTES,
        )
    })
    .await
    .map_err(|e| Error::Internal(format!("verify task: {e}")))??;
    let rebuilt = Views::new();
    let projection = Arc::new(ViewsOnly::new(Arc::clone(&rebuilt)));
    let opened =
        tokio::task::spawn_blocking(move || Store::open(&dir, StoreConfig::default(), projection))
            .await
            .map_err(|e| Error::Internal(format!("verify task: {e}")))??;
    let rebuilt_in = began.elapsed();
    let live = Arc::clone(views);
    let other = Arc::clone(&rebuilt);
    let findings = tokio::task::spawn_blocking(move || compare(&live, &other, snapshot))
        .await
        .map_err(|e| Error::Internal(format!("verify task: {e}")))??;
    opened.close().await?;
    rebuilt.close();
    Ok((
        findings,
        format!(
            "views: figures, totals and agreements at {snapshot} against views rebuilt from the \
             log (rebuilt in {:.1} s, compared in {:.1} s)",
            rebuilt_in.as_secs_f64(),
            (began.elapsed() - rebuilt_in).as_secs_f64()
        ),
    ))
}

fn unreadable(e: crate::views::Unreadable) -> Error {
    Error::Internal(format!("verify: {e}"))
}

fn finding(description: String, sequence: u64) -> Finding {
    Finding {
        area: "views",
        first: sequence,
        last: sequence,
        description,
    }
}

/// Counts a difference, and lists it while the list is short.
fn note(out: &mut Vec<Finding>, differing: &mut u64, text: String, sequence: u64) {
    *differing += 1;
    if out.len() < MAX_VIEW_FINDINGS {
        out.push(finding(text, sequence));
    }
}

/// Compares two views at `snapshot`.
fn compare(live: &Views, rebuilt: &Views, snapshot: u64) -> Result<Vec<Finding>, Error> {
    let mut out = Vec::new();
    let mut differing = 0u64;
    // Every figure of every pair, in one pass over each side's pages: both
    // read a window of keys at a time and are merged by key, so a figure
    // missing on one side is reported as such and the rest still lines up.
    let mut combos: BTreeSet<(u8, u8)> = BTreeSet::new();
    let pairs: BTreeSet<(Country, Country)> = [live, rebuilt]
        .iter()
        .flat_map(|v| {
            v.read()
                .pairs
                .iter()
                .flat_map(|(r, ps)| ps.keys().map(|p| (*r, *p)))
                .collect::<Vec<_>>()
        })
        .collect();
    for (reporter, partner) in pairs {
        let mut from = Bound::Unbounded;
        loop {
            let window = |v: &Views| {
                v.read()
                    .pair_figures_window(
                        reporter,
                        partner,
                        (from, Bound::Unbounded),
                        FIGURES_PER_READ,
                    )
                    .map_err(unreadable)
            };
            let (a, more_a) = window(live)?;
            let (b, more_b) = window(rebuilt)?;
            // Keys up to `upto` are whole on both sides.
            let upto = [(more_a, a.last()), (more_b, b.last())]
                .into_iter()
                .filter_map(|(more, last)| more.then_some(last.map(|(k, _)| *k)).flatten())
                .min();
            let within = |k: &FigureKey| upto.is_none_or(|u| *k <= u);
            let (mut i, mut j) = (0, 0);
            loop {
                let x = a.get(i).filter(|(k, _)| within(k));
                let y = b.get(j).filter(|(k, _)| within(k));
                let (key, fa, fb) = match (x, y) {
                    (None, None) => break,
                    (Some((ka, ra)), Some((kb, rb))) if ka == kb => {
                        i += 1;
                        j += 1;
                        (*ka, figure_at(ra, snapshot), figure_at(rb, snapshot))
                    }
                    (Some((ka, ra)), Some((kb, _))) if ka < kb => {
                        i += 1;
                        (*ka, figure_at(ra, snapshot), None)
                    }
                    (Some((ka, ra)), None) => {
                        i += 1;
                        (*ka, figure_at(ra, snapshot), None)
                    }
                    (_, Some((kb, rb))) => {
                        j += 1;
                        (*kb, None, figure_at(rb, snapshot))
                    }
                };
                if fa.is_some() || fb.is_some() {
                    let level = CommodityLevel::of(&key.scope) as u8;
                    combos.insert((key.period.frequency() as u8, level));
                }
                let same = match (&fa, &fb) {
                    (None, None) => true,
                    (Some(p), Some(q)) => {
                        p.value == q.value
                            && p.revision == q.revision
                            && p.sequence == q.sequence
                            && p.details == q.details
                    }
                    _ => false,
                };
                if !same {
                    let show = |f: &Option<FigureAt>| match f {
                        Some(f) => format!(
                            "{} (revision {}, sequence {})",
                            f.value, f.revision, f.sequence
                        ),
                        None => "nothing".into(),
                    };
                    let seq = fa
                        .as_ref()
                        .map_or(0, |f| f.sequence)
                        .max(fb.as_ref().map_or(0, |f| f.sequence));
                    note(
                        &mut out,
                        &mut differing,
                        format!(
                            "{}-{} {:?} {:?} {:?}: the views hold {}; the log gives {}",
                            reporter.alpha3(),
                            partner.alpha3(),
                            key.period,
                            key.scope,
                            key.flow,
                            show(&fa),
                            show(&fb)
                        ),
                        seq,
                    );
                }
            }
            match upto {
                Some(u) => from = Bound::Excluded(u),
                None => break,
            }
        }
    }
    // The totals by reporter, partner and period (the rollups), at each
    // frequency and level that holds figures (on either side).
    for frequency in [
        Frequency::Annual,
        Frequency::Quarterly,
        Frequency::Monthly,
        Frequency::YearToDate,
    ] {
        for level in [
            CommodityLevel::All,
            CommodityLevel::Hs2,
            CommodityLevel::Hs4,
            CommodityLevel::Hs6,
            CommodityLevel::Sector,
        ] {
            if !combos.contains(&(frequency as u8, level as u8)) {
                continue;
            }
            let filter = FigureFilter {
                reporters: Default::default(),
                partners: Default::default(),
                flows: Default::default(),
                level,
                hs_prefix: None,
                sectors: SectorSet::default(),
                periods: PeriodRange {
                    frequency,
                    from: None,
                    to: None,
                },
            };
            let dims = [GroupDim::Reporter, GroupDim::Partner, GroupDim::Period];
            let a = aggregate(&live.read(), snapshot, &filter, &dims, MAX_GROUPS)
                .map_err(unreadable)?;
            let b = aggregate(&rebuilt.read(), snapshot, &filter, &dims, MAX_GROUPS)
                .map_err(unreadable)?;
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    for (k, ta) in &a {
                        let tb = b.get(k);
                        if tb.map(|t| format!("{t:?}")) != Some(format!("{ta:?}")) {
                            differing += 1;
                            if out.len() < MAX_VIEW_FINDINGS {
                                out.push(finding(format!("totals of {k:?} ({frequency:?}, {level:?}): the views say {ta:?}, the log gives {tb:?}"), 0));
                            }
                        }
                    }
                    for k in b.keys().filter(|k| !a.contains_key(k)) {
                        differing += 1;
                        if out.len() < MAX_VIEW_FINDINGS {
                            out.push(finding(format!("totals of {k:?} ({frequency:?}, {level:?}) are missing from the views"), 0));
                        }
                    }
                }
                _ => out.push(finding("too many groups to compare the totals".into(), 0)),
            }
        }
    }
    // Every agreement's state.
    let a_ix = live.read();
    let b_ix = rebuilt.read();
    let ids: std::collections::BTreeSet<_> = a_ix
        .agreements
        .keys()
        .chain(b_ix.agreements.keys())
        .collect();
    for id in ids {
        let a = a_ix
            .agreements
            .get(id)
            .and_then(|e| agreement_state(e, snapshot));
        let b = b_ix
            .agreements
            .get(id)
            .and_then(|e| agreement_state(e, snapshot));
        if format!("{a:?}") != format!("{b:?}") {
            differing += 1;
            if out.len() < MAX_VIEW_FINDINGS {
                out.push(finding(
                    format!("agreement {id:?}: the views and the log differ"),
                    0,
                ));
            }
        }
    }
    if differing as usize > out.len() {
        out.push(finding(
            format!(
                "{} more differences not listed",
                differing as usize - out.len()
            ),
            0,
        ));
    }
    Ok(out)
}
