//! warden's own log lines on stderr (the journal under systemd), written by a
//! thread of their own (`warden-log`).
//!
//! The event loop hands a line over and goes on. When stderr is slow (a stalled
//! journal, a pipe nobody reads) the bounded queue fills; further lines are then
//! dropped and counted, and the count is written as soon as there is room. So a
//! plugin's `log.write` or chatty output can never block the loop that serves
//! every plugin. [`flush`] waits (boundedly) for what is queued; the CLI calls it
//! before warden exits, so a clean exit loses no line.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Lines that may wait for stderr before new ones are dropped.
pub const QUEUE_LINES: usize = 4096;

/// The longest [`flush`] waits for a stderr that does not drain.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

enum Msg {
    Line(String),
    Flush(SyncSender<()>),
}

struct Sink {
    tx: SyncSender<Msg>,
    dropped: AtomicU64,
}

static SINK: OnceLock<Option<Sink>> = OnceLock::new();

fn sink() -> Option<&'static Sink> {
    SINK.get_or_init(|| {
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        std::thread::Builder::new()
            .name("warden-log".into())
            .spawn(move || write_lines(rx))
            .ok()
            .map(|_| Sink {
                tx,
                dropped: AtomicU64::new(0),
            })
    })
    .as_ref()
}

fn write_lines(rx: Receiver<Msg>) {
    for msg in rx {
        let mut err = std::io::stderr().lock();
        let dropped = SINK
            .get()
            .and_then(Option::as_ref)
            .map_or(0, |s| s.dropped.swap(0, Ordering::Relaxed));
        if dropped > 0 {
            let _ = writeln!(
                err,
                "warden: {dropped} log lines dropped (stderr did not keep up)"
            );
        }
        match msg {
            Msg::Line(line) => {
                let _ = writeln!(err, "{line}");
            }
            Msg::Flush(done) => {
                let _ = err.flush();
                let _ = done.send(());
            }
        }
    }
}

/// Queues one line (without its newline) for stderr; never blocks. Without a log
/// thread (it could not be started) the line is written directly.
pub fn line(text: String) {
    let Some(s) = sink() else {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
        return;
    };
    match s.tx.try_send(Msg::Line(text)) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            s.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Err(TrySendError::Disconnected(Msg::Line(text))) => {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
        Err(TrySendError::Disconnected(Msg::Flush(_))) => {}
    }
}

/// Waits until every line queued so far is written, for at most two seconds.
pub fn flush() {
    let Some(s) = SINK.get().and_then(Option::as_ref) else {
        return;
    };
    let deadline = Instant::now() + FLUSH_WAIT;
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    let mut msg = Msg::Flush(done_tx);
    loop {
        match s.tx.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                msg = m;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => return,
        }
    }
    let _ = done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_returns_once_queued_lines_are_written() {
        line("warden: logsink unit test".into());
        let t = Instant::now();
        flush();
        assert!(t.elapsed() <= FLUSH_WAIT + Duration::from_millis(500));
    }
}
