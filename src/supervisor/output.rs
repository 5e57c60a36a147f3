//! Forwarding a plugin's stdout and stderr to warden's log, line by line, tagged
//! with the plugin id and rate-limited per plugin (a token bucket of lines), so a
//! chatty plugin cannot flood the journal. Suppressed lines are counted and the
//! count is reported once lines flow again, or [`REPORT_AFTER`] after the last
//! one when none do. Reading the pipes is the loop's job; this only splits,
//! limits and formats.

use std::time::{Duration, Instant};

use crate::broker::protocol::Rate;
use crate::broker::ratelimit::TokenBucket;
use crate::config::Output;

/// How long after the last suppressed line the count is reported when no line
/// gets through meanwhile (a plugin that floods, then goes quiet).
pub const REPORT_AFTER: Duration = Duration::from_secs(1);

/// Per-plugin line limiter shared by both streams.
#[derive(Debug)]
pub struct Limiter {
    bucket: TokenBucket,
    suppressed: u64,
    /// Every line suppressed since warden started it, for `ctl stats`.
    total: u64,
    /// When the last line was suppressed (while some are unreported).
    last_suppressed: Option<Instant>,
}

impl Limiter {
    pub fn new(cfg: &Output, now: Instant) -> Limiter {
        Limiter {
            bucket: TokenBucket::new(
                Rate {
                    per_second: cfg.lines_per_second,
                    burst: cfg.burst,
                },
                now,
            ),
            suppressed: 0,
            total: 0,
            last_suppressed: None,
        }
    }

    /// When the unreported count is due for the log, if there is one.
    pub fn report_due(&self) -> Option<Instant> {
        self.last_suppressed.map(|t| t + REPORT_AFTER)
    }

    /// Writes the unreported count to warden's log, if any.
    pub fn report(&mut self, id: &str) {
        if self.suppressed > 0 {
            crate::logsink::line(format!(
                "warden: plugin={id} {} output lines suppressed (rate limit)",
                self.suppressed
            ));
        }
        self.suppressed = 0;
        self.last_suppressed = None;
    }

    /// Lines suppressed so far (reported or not).
    pub fn suppressed_total(&self) -> u64 {
        self.total
    }
}

/// The partial line of one stream.
#[derive(Debug, Default)]
pub struct LineBuf {
    partial: Vec<u8>,
    /// The current line grew past the limit: the rest of it is dropped.
    overlong: bool,
}

impl LineBuf {
    /// Feeds bytes read from the pipe; emits complete lines through `emit`.
    pub fn feed(&mut self, mut bytes: &[u8], max: usize, mut emit: impl FnMut(&[u8], bool)) {
        while let Some(i) = bytes.iter().position(|&b| b == b'\n') {
            self.push(&bytes[..i], max);
            emit(&self.partial, self.overlong);
            self.partial.clear();
            self.overlong = false;
            bytes = &bytes[i + 1..];
        }
        self.push(bytes, max);
    }

    fn push(&mut self, bytes: &[u8], max: usize) {
        let room = max.saturating_sub(self.partial.len());
        if bytes.len() > room {
            self.overlong = true;
        }
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// At end of stream: the unterminated rest, if any.
    pub fn finish(&mut self, emit: impl FnOnce(&[u8], bool)) {
        if !self.partial.is_empty() {
            emit(&self.partial, self.overlong);
            self.partial.clear();
        }
    }
}

/// Queues one plugin line for warden's log (stderr, i.e. the journal under
/// systemd; see `logsink`) if the limiter allows: `warden: plugin=<id> <stream>: <line>`.
pub fn forward(
    limiter: &mut Limiter,
    id: &str,
    stream: &str,
    line: &[u8],
    truncated: bool,
    now: Instant,
) {
    if !limiter.bucket.take(now) {
        limiter.suppressed += 1;
        limiter.total += 1;
        limiter.last_suppressed = Some(now);
        return;
    }
    limiter.report(id);
    let text = String::from_utf8_lossy(line);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect();
    crate::logsink::line(format!(
        "warden: plugin={id} {stream}: {text}{}",
        if truncated { " [truncated]" } else { "" }
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_truncates() {
        let mut b = LineBuf::default();
        let mut got = Vec::new();
        b.feed(b"ab", 4, |l, t| got.push((l.to_vec(), t)));
        b.feed(b"c\nabcdefg\nx", 4, |l, t| got.push((l.to_vec(), t)));
        b.finish(|l, t| got.push((l.to_vec(), t)));
        assert_eq!(
            got,
            vec![
                (b"abc".to_vec(), false),
                (b"abcd".to_vec(), true),
                (b"x".to_vec(), false)
            ]
        );
    }

    #[test]
    fn limiter_counts_suppressed_lines() {
        let cfg = Output {
            lines_per_second: 1,
            burst: 2,
            max_line_bytes: 100,
        };
        let now = Instant::now();
        let mut l = Limiter::new(&cfg, now);
        for _ in 0..5 {
            forward(&mut l, "p", "stdout", b"x", false, now);
        }
        assert_eq!(l.suppressed_total(), 3);
        assert_eq!(l.report_due(), Some(now + REPORT_AFTER));
        l.report("p");
        assert_eq!((l.suppressed_total(), l.report_due()), (3, None));
    }
}
