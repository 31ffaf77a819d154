//! What `caravan verify` and the Verify RPC check beyond the store's own
//! keys (`storage::check`): that the views a server answers from (restored
//! from the newest checkpoint, then the log after it) say exactly what views
//! rebuilt from the log alone say, at one snapshot sequence. The rebuilt
//! views live in a scratch store (the log imported, as `caravan restore`
//! does), so memory stays bounded by the views' own limits.
//!
//! Compared at the snapshot, for every frequency and commodity level: every
//! current figure (value, revision, sequence, source, quantity, note), the
//! totals of every reporter, partner and period, and every agreement's state.
//!
//! Depends on the store facade, the views and `projection`.

use crate::domain::{Frequency, SectorSet};
use crate::error::Error;
use crate::ops::projection::ViewsOnly;
use crate::storage::{Finding, Store, StoreConfig, StoreHandle};
use crate::views::{
    aggregate, agreement_state, next_records, CommodityLevel, FigureFilter, GroupDim, PeriodRange,
    Views,
};
use std::path::Path;
use std::sync::Arc;

/// Records compared per read lock.
const RECORDS_PER_READ: usize = 4096;
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

/// Compares two views at `snapshot`.
fn compare(live: &Views, rebuilt: &Views, snapshot: u64) -> Result<Vec<Finding>, Error> {
    let mut out = Vec::new();
    let mut differing = 0u64;
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
            // Every current figure, side by side.
            let (mut a_at, mut b_at) = (None, None);
            let mut seen = 0usize;
            loop {
                let a = next_records(&live.read(), snapshot, &filter, a_at, RECORDS_PER_READ)
                    .map_err(unreadable)?;
                let b = next_records(&rebuilt.read(), snapshot, &filter, b_at, RECORDS_PER_READ)
                    .map_err(unreadable)?;
                if a.is_empty() && b.is_empty() {
                    break;
                }
                seen += a.len().max(b.len());
                let n = a.len().max(b.len());
                for i in 0..n {
                    match (a.get(i), b.get(i)) {
                        (Some((pa, fa)), Some((pb, fb)))
                            if pa == pb
                                && fa.value == fb.value
                                && fa.revision == fb.revision
                                && fa.sequence == fb.sequence
                                && fa.details == fb.details => {}
                        (x, y) => {
                            differing += 1;
                            if out.len() < MAX_VIEW_FINDINGS {
                                let show =
                                    |r: Option<&(
                                        crate::views::RecordPosition,
                                        crate::views::FigureAt,
                                    )>| match r {
                                        Some(((rep, par, key), f)) => {
                                            format!(
                                        "{}-{} {:?} {:?} {:?} = {} (revision {}, sequence {})",
                                        rep.alpha3(), par.alpha3(), key.period, key.scope, key.flow,
                                        f.value, f.revision, f.sequence
                                    )
                                        }
                                        None => "nothing".into(),
                                    };
                                let seq = x
                                    .map_or(0, |r| r.1.sequence)
                                    .max(y.map_or(0, |r| r.1.sequence));
                                out.push(finding(
                                    format!(
                                        "the views hold {}; the log gives {}",
                                        show(x),
                                        show(y)
                                    ),
                                    seq,
                                ));
                            }
                        }
                    }
                }
                if a.len() != b.len() {
                    // Out of step: the rest of this level is not compared
                    // record by record.
                    break;
                }
                a_at = a.last().map(|r| r.0);
                b_at = b.last().map(|r| r.0);
                if a.len() < RECORDS_PER_READ {
                    break;
                }
            }
            // The totals by reporter, partner and period (the rollups);
            // figures were compared, so where neither side has any at this
            // frequency and level, neither has totals either.
            if seen == 0 {
                continue;
            }
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
