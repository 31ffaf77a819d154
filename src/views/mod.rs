//! Multi-version views of the stored events for queries: every revision of
//! every trade figure and every version of every agreement, each tagged with
//! its sequence, so that any query can be answered as of any sequence
//! ("as-of reads") without touching the log.
//!
//! The figures live in **pages** in the store (every revision of a pair's
//! figures in key order, `page.rs`), written by **checkpoints** behind the
//! acknowledgement (`checkpoint.rs`); the revisions applied since the last
//! checkpoint wait in an in-memory **overlay**, and readers merge both. In
//! memory stay the pairs' **rollups** (the sums of their summing cells per
//! commodity level, period and sector, as of the last checkpoint), the sector
//! index and the agreements. A view at a snapshot that the rollups describe
//! (every change of the pair up to it folded in, none after it) reads them
//! instead of the figures.
//!
//! Kept current by the store's publisher thread after each fsync (through
//! `storage::Projection`); at startup restored from the newest checkpoint
//! and the log after it. Readers take a read lock for one bounded chunk of
//! work at a time and filter by their snapshot sequence, so writes never
//! change an answer in progress; a checkpoint is installed under the write
//! lock, so a chunk sees all of it or none of it.
//!
//! One file per job: `index` (the data, how an event is folded in),
//! `figures` (reading a pair's figures, and folding them at a snapshot), `codec` (the byte form of keys and integers), `page` (the byte
//! form of pages and rollups, and `PageStore`), `checkpoint`, `rollup`, `totals` (the summing rules),
//! `filter` (levels, period ranges, figure filters), `slices` (country and
//! sector views), `records` (StreamTradeRecords), `agreements`, `aggregate`.
//!
//! Depends only on the domain; must not depend on the generated code, tonic
//! or sled (the store's keys are reached through `PageStore`).

mod aggregate;
mod agreements;
mod checkpoint;
mod codec;
mod figures;
mod filter;
mod index;
mod page;
#[cfg(test)]
mod property;
mod records;
mod rollup;
mod slices;
mod stored;
#[cfg(test)]
mod testing;
mod totals;

pub(crate) use aggregate::{aggregate, GroupDim, GroupKey};
pub(crate) use agreements::{agreement_state, AgreementState};
pub(crate) use filter::{CommodityLevel, FigureFilter, PeriodRange};
pub(crate) use index::{figure_at, scope_sector, FigureAt, FigureKey, Index};
pub(crate) use records::{next_records, RecordPosition};
pub(crate) use slices::{pair_slices, partners_of, sector_pairs, SliceData, SliceSpec};
pub(crate) use totals::{
    difference, growth_hundredths, percent_of_hundredths, FlowTotals, TooWide,
};

pub(crate) use page::{CheckpointBatch, KeyValue, PageStore, Unreadable};

use crate::domain::{Payload, StoredEvent};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, Weak};
use std::time::Duration;

/// When checkpoints run. Both are settings of `caravan serve`.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointSettings {
    /// A checkpoint starts once this many revisions wait in memory; the
    /// publisher waits (and acknowledgements with it) when twice as many do
    /// while one is being written, which bounds the overlays' memory.
    pub every_revisions: usize,
    /// A checkpoint also starts this long after the last one if anything
    /// waits, so that the rollups soon describe the newest data.
    pub interval: Duration,
}

/// What a page store's refusal for want of disk space says (`PageStore::room`
/// and the writes of a checkpoint): the checkpoint is put off, not failed.
pub(crate) const NO_ROOM: &str = "put off until space is freed";

/// Default: a checkpoint per 100,000 revisions.
pub const DEFAULT_CHECKPOINT_REVISIONS: usize = 100_000;
/// Default: at least every 5 seconds while anything waits.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

impl Default for CheckpointSettings {
    fn default() -> Self {
        CheckpointSettings {
            every_revisions: DEFAULT_CHECKPOINT_REVISIONS,
            interval: DEFAULT_CHECKPOINT_INTERVAL,
        }
    }
}

/// What the checkpoint thread and the publisher tell each other.
#[derive(Default)]
struct Signal {
    /// The overlay reached a checkpoint's size.
    due: bool,
    /// The views are closing: one last checkpoint, then the thread ends.
    stop: bool,
    /// The views are gone: the thread ends at once.
    gone: bool,
    /// A checkpoint failed; the publisher no longer waits for room.
    failed: bool,
    /// Checkpoints are put off (the disk is nearly full); the publisher
    /// does not wait for room meanwhile.
    paused: bool,
}

/// Shared by the views and their checkpoint thread, which holds only this
/// and a weak reference to the views: a store whose views are dropped (a
/// start that failed, say) is not kept open by a sleeping thread.
struct Control {
    settings: Mutex<CheckpointSettings>,
    signal: Mutex<Signal>,
    /// Wakes the checkpoint thread (`due`, `stop`, `gone`).
    wake: Condvar,
    /// Wakes a publisher waiting for the overlays to shrink.
    room: Condvar,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Control {
    fn signal(&self) -> std::sync::MutexGuard<'_, Signal> {
        self.signal.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The shared views: one index behind a read-write lock, and the checkpoint
/// thread. The publisher thread takes the write lock once per committed
/// group; each query takes the read lock for one bounded chunk of its
/// answer, so neither waits long.
pub(crate) struct Views {
    index: RwLock<Index>,
    control: Arc<Control>,
    /// Unix milliseconds of the newest checkpoint this process wrote (0:
    /// none yet), for the metrics.
    last_checkpoint_ms: std::sync::atomic::AtomicU64,
}

impl Drop for Views {
    fn drop(&mut self) {
        self.control.signal().gone = true;
        self.control.wake.notify_all();
    }
}

impl Views {
    pub(crate) fn new() -> Arc<Views> {
        Arc::new(Views {
            index: RwLock::new(Index::default()),
            control: Arc::new(Control {
                settings: Mutex::new(CheckpointSettings::default()),
                signal: Mutex::new(Signal::default()),
                wake: Condvar::new(),
                room: Condvar::new(),
                thread: Mutex::new(None),
            }),
            last_checkpoint_ms: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// (The newest sequence applied, the sequence the newest checkpoint
    /// covers, Unix milliseconds of the newest checkpoint written here).
    pub(crate) fn positions(&self) -> (u64, u64, u64) {
        let ix = self.read();
        (
            ix.applied,
            ix.checkpointed,
            self.last_checkpoint_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        // A poisoned lock means a reader panicked; the index itself is intact.
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    fn every(&self) -> usize {
        self.control
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .every_revisions
            .max(1)
    }

    /// Attaches the store's pages: loads the rollups of the checkpoint that
    /// covers `covers` and the agreements it covers (their events, in
    /// sequence order), then starts the checkpoint thread. Called once,
    /// before any event is applied.
    pub(crate) fn restore(
        self: &Arc<Self>,
        pages: Arc<dyn PageStore>,
        covers: u64,
        agreements: Vec<StoredEvent>,
        settings: CheckpointSettings,
    ) -> Result<(), Unreadable> {
        {
            let mut ix = self.write();
            ix.restore(pages, covers)?;
            for e in agreements {
                if matches!(
                    e.event.payload,
                    Payload::Agreement(_) | Payload::AgreementStatusChanged(_)
                ) {
                    ix.apply_payload(e.sequence, e.event.payload);
                }
            }
        }
        let control = Arc::clone(&self.control);
        *control.settings.lock().unwrap_or_else(|p| p.into_inner()) = settings;
        let weak = Arc::downgrade(self);
        let thread = std::thread::Builder::new()
            .name("caravan-checkpoint".into())
            .spawn(move || checkpoint_thread(weak, control, settings))
            .map_err(|e| Unreadable(format!("cannot start the checkpoint thread: {e}")))?;
        *self
            .control
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(thread);
        Ok(())
    }

    /// Applies durable events in sequence order. Waits while the overlays
    /// hold twice a checkpoint's worth and a checkpoint is being written.
    pub(crate) fn apply(&self, events: Vec<StoredEvent>) {
        let every = self.every();
        let control = &self.control;
        let mut signal = control.signal();
        loop {
            let full = {
                let ix = self.read();
                ix.frozen.is_some() && ix.active.revisions >= 2 * every
            };
            if !full || signal.failed || signal.stop || signal.paused {
                break;
            }
            signal.due = true;
            control.wake.notify_one();
            signal = control
                .room
                .wait_timeout(signal, Duration::from_millis(100))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        drop(signal);
        let revisions = {
            let mut index = self.write();
            for e in events {
                index.apply(e);
            }
            index.active.revisions
        };
        if revisions >= every {
            control.signal().due = true;
            control.wake.notify_one();
        }
    }

    /// Runs a checkpoint now, on this thread (tests, and the last one when
    /// the views close).
    pub(crate) fn checkpoint(&self) -> Result<bool, Unreadable> {
        let pages = Arc::clone(&self.read().pages);
        let room = pages.room();
        {
            let mut signal = self.control.signal();
            match &room {
                Err(why) if !signal.paused => {
                    tracing::error!(cause = %why, "checkpoints are put off until there is room; the views stay in memory");
                    signal.paused = true;
                }
                Ok(()) if signal.paused => {
                    tracing::info!("room again: checkpoints resume");
                    signal.paused = false;
                }
                _ => {}
            }
        }
        if room.is_err() {
            self.control.room.notify_all();
            return Ok(false);
        }
        let done = checkpoint::checkpoint(&self.index);
        self.control.room.notify_all();
        if let Ok(true) = done {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            self.last_checkpoint_ms
                .store(now, std::sync::atomic::Ordering::Relaxed);
        }
        done
    }

    /// Stops the checkpoint thread after one last checkpoint, so that the
    /// next start replays nothing.
    pub(crate) fn close(&self) {
        self.control.signal().stop = true;
        self.control.wake.notify_all();
        let thread = self
            .control
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
        // Let go of the store, so that it closes now even if a connection's
        // task still holds these views for a moment.
        self.write().pages = Arc::new(index::MemoryPages::default());
    }

    /// Whether a figure is current in what was applied.
    pub(crate) fn figure_is_current(
        &self,
        key: &crate::domain::TradeFigureKey,
    ) -> Result<bool, Unreadable> {
        self.read().figure_is_current(key)
    }

    /// The sequence of a figure's first record in what was applied.
    pub(crate) fn figure_first_record(
        &self,
        key: &crate::domain::TradeFigureKey,
    ) -> Result<Option<u64>, Unreadable> {
        self.read().figure_first_record(key)
    }

    /// Read access for one bounded piece of work.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// The checkpoint thread: one checkpoint whenever the overlay is due or the
/// interval has passed with anything waiting; ends when the views close
/// (after a last checkpoint) or are dropped.
fn checkpoint_thread(views: Weak<Views>, control: Arc<Control>, settings: CheckpointSettings) {
    loop {
        let stop = {
            let signal = control.signal();
            let (mut signal, _) = control
                .wake
                .wait_timeout_while(signal, settings.interval, |s| !s.due && !s.stop && !s.gone)
                .unwrap_or_else(|p| p.into_inner());
            if signal.gone {
                return;
            }
            signal.due = false;
            signal.stop
        };
        let Some(v) = views.upgrade() else { return };
        // A panic must not leave the publisher waiting for room for ever.
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| v.checkpoint()))
            .unwrap_or_else(|_| Err(Unreadable("the checkpoint panicked".into())));
        if let Err(e) = done {
            // A checkpoint refused for want of disk space leaves the
            // previous one in force (what it wrote ahead is written again by
            // the next): it is put off, and taken up again once there is
            // room. The last one, at close, is simply not made: the next
            // start replays the log since the previous one.
            if e.0.contains(NO_ROOM) {
                {
                    let mut signal = control.signal();
                    if !signal.paused {
                        tracing::error!(cause = %e, "checkpoints are put off until there is room; the views stay in memory");
                    }
                    signal.paused = true;
                }
                control.room.notify_all();
                drop(v);
                if stop {
                    return;
                }
                continue;
            }
            tracing::error!(error = %e, "checkpoint failed; the views stay in memory and the next start replays the log since the last checkpoint");
            control.signal().failed = true;
            control.room.notify_all();
            return;
        }
        drop(v);
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod room_tests {
    use super::*;
    use index::MemoryPages;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Pages on a disk that can be full: then a checkpoint may neither
    /// begin nor write.
    #[derive(Default)]
    struct Disk {
        pages: MemoryPages,
        full: AtomicBool,
        /// Full only once a checkpoint has begun (its writes are refused).
        full_for_writes: AtomicBool,
    }

    impl Disk {
        fn refuse(&self) -> Result<(), Unreadable> {
            if self.full.load(Ordering::SeqCst) || self.full_for_writes.load(Ordering::SeqCst) {
                return Err(Unreadable(format!("no room; {NO_ROOM}")));
            }
            Ok(())
        }
    }

    impl PageStore for Disk {
        fn scan(
            &self,
            from: &[u8],
            to: &[u8],
            each: &mut dyn FnMut(&[u8], &[u8]) -> bool,
        ) -> Result<(), Unreadable> {
            self.pages.scan(from, to, each)
        }
        fn floor(&self, lowest: &[u8], key: &[u8]) -> Result<Option<KeyValue>, Unreadable> {
            self.pages.floor(lowest, key)
        }
        fn put(&self, puts: Vec<KeyValue>) -> Result<(), Unreadable> {
            self.refuse()?;
            self.pages.put(puts)
        }
        fn apply(&self, batch: CheckpointBatch) -> Result<(), Unreadable> {
            self.refuse()?;
            self.pages.apply(batch)
        }
        fn sync(&self) -> Result<(), Unreadable> {
            Ok(())
        }
        fn room(&self) -> Result<(), String> {
            if self.full.load(Ordering::SeqCst) {
                return Err(format!("no room; {NO_ROOM}"));
            }
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_puts_checkpoints_off_and_close_does_not_wait_for_room() {
        let disk = Arc::new(Disk::default());
        let views = Views::new();
        let settings = CheckpointSettings {
            every_revisions: 50,
            interval: Duration::from_millis(20),
        };
        views
            .restore(disk.clone(), 0, Vec::new(), settings)
            .unwrap();
        disk.full.store(true, Ordering::SeqCst);
        let events = testing::random_events(2_000, 7);
        // Far beyond twice a checkpoint's worth: the publisher never waits.
        views.apply(events[..1000].to_vec());
        assert!(!views.checkpoint().unwrap(), "put off");
        assert_eq!(views.read().checkpointed, 0);

        // Writes refused in the middle of a checkpoint: put off as well.
        disk.full.store(false, Ordering::SeqCst);
        disk.full_for_writes.store(true, Ordering::SeqCst);
        let began = std::time::Instant::now();
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(10));
            let signal = views.control.signal();
            assert!(!signal.failed, "put off, not failed");
        }
        while !views.control.signal().paused {
            assert!(began.elapsed() < Duration::from_secs(10), "put off");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(views.read().checkpointed, 0);

        // Room again: the checkpoint thread takes it up by itself.
        disk.full_for_writes.store(false, Ordering::SeqCst);
        let began = std::time::Instant::now();
        while views.read().checkpointed < 1000 {
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "checkpointed again"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let paused = views.control.signal().paused;
        assert!(!paused);

        // Full again (room to begin, none to write), and closed: the last
        // checkpoint is not made, and the close does not wait for room.
        disk.full_for_writes.store(true, Ordering::SeqCst);
        views.apply(events[1000..].to_vec());
        let (done, closed) = std::sync::mpsc::channel();
        let closing = Arc::clone(&views);
        std::thread::spawn(move || {
            closing.close();
            let _ = done.send(());
        });
        closed
            .recv_timeout(Duration::from_secs(10))
            .expect("close returns on a full disk");
        assert_eq!(views.read().checkpointed, 1000);
    }
}
