//! Counters for `/metrics`, in the Prometheus text exposition format. A handful
//! of atomics is all a repository server needs; no metrics library required.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// For gauges: the value now.
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct Metrics {
    pub uploads_stored: Counter,
    pub uploads_already_present: Counter,
    pub uploads_refused: Counter,
    pub upload_bytes: Counter,
    pub publishes: Counter,
    pub publish_failures: Counter,
    publish_micros: Counter,
    pub http_requests: Counter,
    pub http_not_found: Counter,
    pub http_bytes_served: Counter,
    pub gc_runs: Counter,
    pub gc_failures: Counter,
    /// gc rounds skipped because another gc held the store.
    pub gc_skipped: Counter,
    pub gc_swept_blobs: Counter,
    pub gc_reclaimed_bytes: Counter,
    /// 0 idle, 1 marking, 2 waiting for writers, 3 sweeping.
    pub gc_stage: Counter,
    pub gc_last_seconds_millis: Counter,
    /// Times this daemon's writers paused for a gc (from the store).
    pub gc_writer_pauses: Counter,
    pub change_log_polls: Counter,
    pub change_log_entries_followed: Counter,
    pub change_log_full_scans: Counter,
    /// This process's side of the change log and ref races (from the store).
    pub change_log: std::sync::Mutex<crate::store::change_log::ChangeLogCounters>,
}

impl Metrics {
    pub fn record_publish(&self, elapsed: Duration) {
        self.publishes.inc();
        self.publish_micros.add(elapsed.as_micros() as u64);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "caprepo_uploads_stored_total",
            "Packages stored by uploads.",
            self.uploads_stored.get(),
        );
        counter(
            "caprepo_uploads_already_present_total",
            "Uploads of bytes that were already stored (no-ops).",
            self.uploads_already_present.get(),
        );
        counter(
            "caprepo_uploads_refused_total",
            "Uploads refused with a 4xx.",
            self.uploads_refused.get(),
        );
        counter(
            "caprepo_upload_bytes_total",
            "Bytes received in uploads.",
            self.upload_bytes.get(),
        );
        counter(
            "caprepo_publishes_total",
            "Suite publications written.",
            self.publishes.get(),
        );
        counter(
            "caprepo_publish_failures_total",
            "Suite publications that failed.",
            self.publish_failures.get(),
        );
        counter(
            "caprepo_http_requests_total",
            "HTTP requests answered.",
            self.http_requests.get(),
        );
        counter(
            "caprepo_http_not_found_total",
            "HTTP requests answered 404.",
            self.http_not_found.get(),
        );
        counter(
            "caprepo_http_served_bytes_total",
            "Bytes of repository files served.",
            self.http_bytes_served.get(),
        );
        counter(
            "caprepo_gc_runs_total",
            "gc rounds this daemon ran to the end.",
            self.gc_runs.get(),
        );
        counter(
            "caprepo_gc_failures_total",
            "gc rounds that failed or gave up (writers did not pause, store errors).",
            self.gc_failures.get(),
        );
        counter(
            "caprepo_gc_skipped_total",
            "gc rounds skipped because another gc held the store.",
            self.gc_skipped.get(),
        );
        counter(
            "caprepo_gc_swept_blobs_total",
            "Blobs, composites and crash leftovers gc deleted.",
            self.gc_swept_blobs.get(),
        );
        counter(
            "caprepo_gc_reclaimed_bytes_total",
            "Bytes gc reclaimed.",
            self.gc_reclaimed_bytes.get(),
        );
        counter(
            "caprepo_gc_writer_pauses_total",
            "Times this daemon's writes paused while a gc swept (any daemon's gc).",
            self.gc_writer_pauses.get(),
        );
        counter(
            "caprepo_change_log_polls_total",
            "Reads of the store's change log (one request each while nothing changes).",
            self.change_log_polls.get(),
        );
        counter(
            "caprepo_change_log_entries_followed_total",
            "Change log entries read (each names refs another writer moved).",
            self.change_log_entries_followed.get(),
        );
        counter(
            "caprepo_change_log_full_scans_total",
            "Scans of every repository and cell head: at start, after falling behind, and as a safety net.",
            self.change_log_full_scans.get(),
        );
        let store = self.change_log.lock().map(|c| *c).unwrap_or_default();
        counter(
            "caprepo_change_log_appends_total",
            "Change log entries this process appended.",
            store.appends,
        );
        counter(
            "caprepo_change_log_append_conflicts_total",
            "Change log appends retried because another process appended first.",
            store.append_conflicts,
        );
        counter(
            "caprepo_change_log_append_failures_total",
            "Batches of changes that could not be appended (the safety scan finds them).",
            store.append_failures,
        );
        counter(
            "caprepo_cell_write_conflicts_total",
            "Cell writes retried because another writer advanced the cell first.",
            store.cell_write_conflicts,
        );
        let mut gauge = |name: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            "caprepo_gc_stage",
            "Where this daemon's gc is: 0 idle, 1 marking, 2 waiting for writers to pause, 3 sweeping.",
            self.gc_stage.get().to_string(),
        );
        gauge(
            "caprepo_gc_last_duration_seconds",
            "How long this daemon's last gc round took.",
            format!("{:.3}", self.gc_last_seconds_millis.get() as f64 / 1e3),
        );
        let _ = writeln!(
            out,
            "# HELP caprepo_publish_seconds_total Time spent publishing.\n# TYPE caprepo_publish_seconds_total counter\ncaprepo_publish_seconds_total {:.6}",
            self.publish_micros.get() as f64 / 1e6
        );
        out
    }
}
