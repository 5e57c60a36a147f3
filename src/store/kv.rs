//! Key-value namespaces with per-namespace quotas. Keys are compared as bytes;
//! usage (keys, bytes of keys plus values) is kept in `kv_usage` in the same
//! transaction as every change, so the quota check costs one row read.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

/// A namespace's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub max_keys: u64,
    pub max_bytes: u64,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            max_keys: 10_000,
            max_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Why a KV write failed.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("quota exceeded putting {key:?}: {keys} keys and {bytes} bytes would exceed {quota_keys} keys or {quota_bytes} bytes")]
    Quota {
        key: String,
        keys: u64,
        bytes: u64,
        quota_keys: u64,
        quota_bytes: u64,
    },
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
}

pub fn get(conn: &Connection, ns: &str, key: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM kv WHERE ns = ?1 AND key = ?2")?
        .query_row(params![ns, key], |r| r.get(0))
        .optional()
}

fn usage(tx: &Transaction<'_>, ns: &str) -> rusqlite::Result<(u64, u64)> {
    Ok(tx
        .prepare_cached("SELECT keys, bytes FROM kv_usage WHERE ns = ?1")?
        .query_row(params![ns], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })
        .optional()?
        .unwrap_or((0, 0)))
}

fn set_usage(tx: &Transaction<'_>, ns: &str, keys: u64, bytes: u64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO kv_usage (ns, keys, bytes) VALUES (?1, ?2, ?3)
         ON CONFLICT (ns) DO UPDATE SET keys = excluded.keys, bytes = excluded.bytes",
    )?
    .execute(params![ns, keys as i64, bytes as i64])?;
    Ok(())
}

/// Inserts or replaces `key`, refusing a write that would exceed `quota`.
pub fn put(
    tx: &Transaction<'_>,
    ns: &str,
    key: &str,
    value: &str,
    quota: Quota,
) -> Result<(), KvError> {
    let old = tx
        .prepare_cached("SELECT value FROM kv WHERE ns = ?1 AND key = ?2")?
        .query_row(params![ns, key], |r| r.get::<_, String>(0))
        .optional()?;
    let (keys, bytes) = usage(tx, ns)?;
    let (keys, bytes) = match &old {
        Some(v) => (
            keys,
            bytes - (key.len() + v.len()) as u64 + (key.len() + value.len()) as u64,
        ),
        None => (keys + 1, bytes + (key.len() + value.len()) as u64),
    };
    if keys > quota.max_keys || bytes > quota.max_bytes {
        return Err(KvError::Quota {
            key: key.to_owned(),
            keys,
            bytes,
            quota_keys: quota.max_keys,
            quota_bytes: quota.max_bytes,
        });
    }
    tx.prepare_cached(
        "INSERT INTO kv (ns, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![ns, key, value])?;
    set_usage(tx, ns, keys, bytes)?;
    Ok(())
}

/// Removes `key`; returns whether it existed.
pub fn delete(tx: &Transaction<'_>, ns: &str, key: &str) -> rusqlite::Result<bool> {
    let old = tx
        .prepare_cached("DELETE FROM kv WHERE ns = ?1 AND key = ?2 RETURNING value")?
        .query_row(params![ns, key], |r| r.get::<_, String>(0))
        .optional()?;
    if let Some(v) = old {
        let (keys, bytes) = usage(tx, ns)?;
        set_usage(tx, ns, keys - 1, bytes - (key.len() + v.len()) as u64)?;
        return Ok(true);
    }
    Ok(false)
}

/// Up to `limit` keys starting with `prefix`, in byte order, after `cursor` when
/// given. Returns the keys and the cursor for the next page (`None` when done).
pub fn list(
    conn: &Connection,
    ns: &str,
    prefix: &str,
    limit: usize,
    cursor: Option<&str>,
) -> rusqlite::Result<(Vec<String>, Option<String>)> {
    let mut stmt = conn.prepare_cached(
        "SELECT key FROM kv WHERE ns = ?1 AND key >= ?2 AND (?3 IS NULL OR key > ?3)
         ORDER BY key LIMIT ?4",
    )?;
    let mut rows = stmt.query(params![ns, prefix, cursor, (limit + 1) as i64])?;
    let mut keys = Vec::with_capacity(limit);
    let mut more = false;
    while let Some(row) = rows.next()? {
        let key: String = row.get(0)?;
        if !key.starts_with(prefix) {
            break;
        }
        if keys.len() == limit {
            more = true;
            break;
        }
        keys.push(key);
    }
    let next = if more { keys.last().cloned() } else { None };
    Ok((keys, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn namespaces_quota_and_paging() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut conn = store.connect().unwrap();
        let q = Quota {
            max_keys: 3,
            max_bytes: 20,
        };
        let tx = conn.transaction().unwrap();
        put(&tx, "plugin:a", "k1", "v1", q).unwrap();
        put(&tx, "plugin:a", "k2", "v2", q).unwrap();
        put(&tx, "plugin:b", "k1", "other", q).unwrap();
        put(&tx, "plugin:a", "k1", "v1v1", q).unwrap(); // replace: (2+4) + (2+2) = 10 bytes
        assert!(matches!(
            put(&tx, "plugin:a", "k3", "value-too-long", q), // 10 + 16 > 20
            Err(KvError::Quota { .. })
        ));
        put(&tx, "plugin:a", "k3", "x", q).unwrap();
        assert!(matches!(
            put(&tx, "plugin:a", "k4", "", q),
            Err(KvError::Quota { keys: 4, .. })
        ));
        assert!(delete(&tx, "plugin:a", "k3").unwrap());
        assert!(!delete(&tx, "plugin:a", "k3").unwrap());
        tx.commit().unwrap();
        assert_eq!(
            get(&conn, "plugin:a", "k1").unwrap().as_deref(),
            Some("v1v1")
        );
        assert_eq!(
            get(&conn, "plugin:b", "k1").unwrap().as_deref(),
            Some("other")
        );
        assert_eq!(get(&conn, "plugin:a", "nope").unwrap(), None);
        let (page, next) = list(&conn, "plugin:a", "k", 1, None).unwrap();
        assert_eq!((page, next.as_deref()), (vec!["k1".to_owned()], Some("k1")));
        let (page, next) = list(&conn, "plugin:a", "k", 1, Some("k1")).unwrap();
        assert_eq!((page, next), (vec!["k2".to_owned()], None));
        let (page, _) = list(&conn, "plugin:a", "x", 10, None).unwrap();
        assert!(page.is_empty());
    }

    #[test]
    fn committed_writes_are_visible_to_a_new_connection() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut c1 = store.connect().unwrap();
        let tx = c1.transaction().unwrap();
        put(&tx, "n", "k", "v", Quota::default()).unwrap();
        tx.commit().unwrap();
        let store2 = Store::open(dir.path()).unwrap();
        assert_eq!(
            get(&store2.connect().unwrap(), "n", "k")
                .unwrap()
                .as_deref(),
            Some("v")
        );
    }
}
