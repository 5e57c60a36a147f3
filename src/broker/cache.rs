//! A bounded read cache for `kv.get`, one per KV namespace, so a hot key is
//! answered from memory on the event loop instead of a round trip to a reader
//! thread. Writes invalidate the key when they are submitted and again when they
//! complete; a read result fills the cache only if no write to that namespace was
//! submitted while it was in flight (a generation check). A read submitted while
//! an earlier write was still committing may fill the value from before it; the
//! write's completion removes it before the plugin is told of the write. So the
//! cache never holds a value older than the last write the plugin was told about.
//! Over its byte budget the cache is simply emptied. It cannot see writes by other
//! processes: `warden serve` holds its state directory alone, and `warden run`
//! (whose runs may share one) turns the cache off (`Broker::read_through`).

use std::collections::HashMap;

/// Bytes (keys plus values) one namespace's cache may hold.
pub const CACHE_BYTES: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct KvCache {
    /// `None` caches a known-absent key.
    entries: HashMap<String, Option<String>>,
    bytes: usize,
    generation: u64,
}

impl KvCache {
    /// A hit: `Some(Some(value))`, or `Some(None)` for a key known to be absent.
    pub fn get(&self, key: &str) -> Option<Option<&str>> {
        self.entries.get(key).map(Option::as_deref)
    }

    /// The generation a read must present to fill the cache.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Forgets `key` because a write to it was submitted.
    pub fn invalidate(&mut self, key: &str) {
        self.generation += 1;
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= key.len() + old.map_or(0, |v| v.len());
        }
    }

    /// Stores what a read returned, unless a write was submitted since it began.
    pub fn fill(&mut self, generation: u64, key: String, value: Option<String>) {
        if generation != self.generation {
            return;
        }
        let size = key.len() + value.as_ref().map_or(0, String::len);
        if size > CACHE_BYTES {
            return;
        }
        if self.bytes + size > CACHE_BYTES {
            self.entries.clear();
            self.bytes = 0;
        }
        if let Some(old) = self.entries.insert(key.clone(), value) {
            self.bytes -= key.len() + old.map_or(0, |v| v.len());
        }
        self.bytes += size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_hits_invalidates_and_refuses_stale_fills() {
        let mut c = KvCache::default();
        assert_eq!(c.get("k"), None);
        let g = c.generation();
        c.fill(g, "k".into(), Some("v".into()));
        c.fill(g, "gone".into(), None);
        assert_eq!(c.get("k"), Some(Some("v")));
        assert_eq!(c.get("gone"), Some(None));
        let before_write = c.generation();
        c.invalidate("k");
        assert_eq!(c.get("k"), None);
        // a read that started before the write must not refill the old value
        c.fill(before_write, "k".into(), Some("v".into()));
        assert_eq!(c.get("k"), None);
    }

    #[test]
    fn stays_within_its_budget() {
        let mut c = KvCache::default();
        let big = "x".repeat(CACHE_BYTES / 3);
        for i in 0..10 {
            let g = c.generation();
            c.fill(g, format!("k{i}"), Some(big.clone()));
            assert!(c.bytes <= CACHE_BYTES);
        }
        let g = c.generation();
        c.fill(g, "huge".into(), Some("y".repeat(CACHE_BYTES)));
        assert_eq!(c.get("huge"), None);
    }
}
