//! Where the broker's decisions go: the [`Recorder`] trait it calls for every
//! decision, and [`AuditRecorder`], which writes them to the tamper-evident audit
//! log from a thread of its own. Nothing here decides anything; it only records.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{Decision, PluginContext};
use serde_json::Value;

use crate::audit::{AuditLog, Event};
use crate::bundle::Capability;

/// One thing the broker decided, for the audit log.
#[derive(Debug)]
pub struct Record<'a> {
    pub plugin: &'a PluginContext,
    /// `host_call`, `hello` or `channel`.
    pub kind: &'static str,
    pub op: &'a str,
    pub capability: Option<Capability>,
    pub decision: Decision,
    pub reason: &'a str,
    pub duration: Duration,
    /// Op-specific fields (a dial's host, port, resolved and dialled address; an
    /// open's path), written under the event's `extra`.
    pub extra: Option<&'a serde_json::Map<String, Value>>,
}

/// Where audit records go.
pub trait Recorder {
    fn record(&mut self, r: &Record<'_>);

    /// Set once recording has failed; the loop owner must then stop serving
    /// (fail closed: no unaudited decisions).
    fn failure(&self) -> Option<String> {
        None
    }
}

/// Records into the tamper-evident audit log from a thread of its own, so that
/// encoding, hashing, writing and fsync never stall the event loop. The loop only
/// appends to a queue; the audit thread drains it at least every flush interval
/// (sooner when [`AUDIT_BATCH`] events wait) and flushes the log per its fsync
/// policy. [`AuditRecorder::close`] drains and flushes everything: nothing accepted
/// is lost on a clean stop.
pub struct AuditRecorder {
    shared: Arc<AuditShared>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

/// Queued events that wake the audit thread before its interval is up.
pub const AUDIT_BATCH: usize = 512;

struct AuditShared {
    queue: Mutex<Vec<Event>>,
    wake: Condvar,
    stop: AtomicBool,
    failed: Mutex<Option<String>>,
}

impl AuditRecorder {
    /// Starts the audit thread, which owns `log` from now on.
    pub fn start(mut log: AuditLog) -> AuditRecorder {
        let shared = Arc::new(AuditShared {
            queue: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            failed: Mutex::new(None),
        });
        let s = Arc::clone(&shared);
        let interval = log.flush_interval();
        let thread = std::thread::Builder::new()
            .name("warden-audit".into())
            .spawn(move || {
                let path = log.path().display().to_string();
                let fail = |e: &dyn std::fmt::Display| {
                    let msg = format!("audit log {path}: {e}");
                    s.failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(msg.clone());
                    msg
                };
                loop {
                    let batch = {
                        let mut q = s.queue.lock().unwrap_or_else(|p| p.into_inner());
                        if q.len() < AUDIT_BATCH && !s.stop.load(Ordering::Acquire) {
                            q = s
                                .wake
                                .wait_timeout(q, interval)
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                        }
                        std::mem::take(&mut *q)
                    };
                    for e in &batch {
                        if let Err(e) = log.append(e) {
                            return Err(fail(&e));
                        }
                    }
                    let empty = s.queue.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
                    if s.stop.load(Ordering::Acquire) && empty {
                        // One sync for everything at the end.
                        return log.close().map_err(|e| fail(&e));
                    }
                    if let Err(e) = log.flush() {
                        return Err(fail(&e));
                    }
                }
            })
            .expect("spawning the audit thread");
        AuditRecorder {
            shared,
            thread: Some(thread),
        }
    }

    /// Queues an event (launch, exit, ...) for the log.
    pub fn append(&self, e: Event) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.push(e);
        if q.len() == AUDIT_BATCH {
            self.shared.wake.notify_one();
        }
    }

    /// Writes everything queued, flushes and closes the log.
    pub fn close(mut self) -> Result<(), String> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), String> {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err("audit thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for AuditRecorder {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("warden: {e}");
        }
    }
}

impl Recorder for AuditRecorder {
    fn record(&mut self, r: &Record<'_>) {
        self.append(Event {
            kind: r.kind,
            plugin: Some(r.plugin.id.clone()),
            version: Some(r.plugin.version.clone()),
            sha256: Some(r.plugin.sha256.clone()),
            op: Some(r.op.to_owned()),
            capability: r.capability.map(|c| c.as_str().to_owned()),
            decision: Some(r.decision),
            reason: (!r.reason.is_empty()).then(|| r.reason.to_owned()),
            duration_us: Some(r.duration.as_micros() as u64),
            extra: r.extra.cloned().unwrap_or_default(),
        });
    }

    fn failure(&self) -> Option<String> {
        self.shared
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
