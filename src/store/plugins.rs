//! The supervisor's per-plugin records (schema v2 table `plugins`): lifecycle
//! status, the version last verified, the highest version ever accepted (rollback
//! protection), a one-off downgrade the operator allowed, and the review policy
//! (status, granted capability names, and since v3 the egress allow-list and the
//! explicitly allowed addresses). Plain strings in, plain strings out:
//! meaning and validation belong to `crate::supervisor`.

use rusqlite::{params, Connection, OptionalExtension, Row};

/// One plugin's durable record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    /// `verified`, `installed`, `active` or `disabled`.
    pub status: String,
    pub version: String,
    pub highest: String,
    /// A version below `highest` the operator explicitly allowed.
    pub allow_downgrade: Option<String>,
    /// `pending_review`, `approved` or `blocked`.
    pub policy_status: String,
    pub grants: Vec<String>,
    /// `host:port` patterns `net.dial` may reach (docs/policy.md `egress.allow`).
    pub egress: Vec<String>,
    /// Otherwise forbidden addresses or ranges allowed anyway (`egress.allow_addresses`).
    pub allow_addresses: Vec<String>,
}

const COLUMNS: &str =
    "id, status, version, highest, allow_downgrade, policy_status, grants, egress, allow_addresses";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Record> {
    let grants: String = r.get(6)?;
    let egress: String = r.get(7)?;
    let allow_addresses: String = r.get(8)?;
    Ok(Record {
        id: r.get(0)?,
        status: r.get(1)?,
        version: r.get(2)?,
        highest: r.get(3)?,
        allow_downgrade: r.get(4)?,
        policy_status: r.get(5)?,
        grants: serde_json::from_str(&grants).unwrap_or_default(),
        egress: serde_json::from_str(&egress).unwrap_or_default(),
        allow_addresses: serde_json::from_str(&allow_addresses).unwrap_or_default(),
    })
}

/// Every record, by id.
pub fn all(conn: &Connection) -> rusqlite::Result<Vec<Record>> {
    let mut st = conn.prepare(&format!("SELECT {COLUMNS} FROM plugins ORDER BY id"))?;
    let rows = st.query_map([], from_row)?;
    rows.collect()
}

/// The record of `id`, if any.
pub fn get(conn: &Connection, id: &str) -> rusqlite::Result<Option<Record>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM plugins WHERE id = ?1"),
        [id],
        from_row,
    )
    .optional()
}

/// Inserts or replaces `r` (one committed transaction).
pub fn put(conn: &Connection, r: &Record) -> rusqlite::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let list = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    let (grants, egress, addresses) = (list(&r.grants), list(&r.egress), list(&r.allow_addresses));
    conn.execute(
        "INSERT OR REPLACE INTO plugins
           (id, status, version, highest, allow_downgrade, policy_status, grants, updated_us,
            egress, allow_addresses)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            r.id,
            r.status,
            r.version,
            r.highest,
            r.allow_downgrade,
            r.policy_status,
            grants,
            now,
            egress,
            addresses
        ],
    )?;
    Ok(())
}

/// The host uid of plugin `id`, within `range` (inclusive): the one it was given
/// before while that is still in the range, else the first uid free for it from
/// `preferred` on (wrapping within the range), recorded. No two plugins get one
/// uid. `None` when every uid of the range is given to another plugin.
pub fn host_uid(
    conn: &Connection,
    id: &str,
    (lo, hi): (u32, u32),
    preferred: u32,
) -> rusqlite::Result<Option<u32>> {
    // Read and claim under one write lock: two wardens on one state directory
    // cannot give out the same uid.
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let had: Option<u32> = tx
        .query_row("SELECT uid FROM host_uids WHERE plugin = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(uid) = had.filter(|u| (lo..=hi).contains(u)) {
        return Ok(Some(uid));
    }
    let taken: std::collections::HashSet<u32> = {
        let mut st =
            tx.prepare("SELECT uid FROM host_uids WHERE uid BETWEEN ?1 AND ?2 AND plugin != ?3")?;
        let rows = st.query_map(params![lo, hi, id], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let span = u64::from(hi - lo) + 1;
    let start = u64::from(preferred.clamp(lo, hi) - lo);
    let free = (0..span)
        .map(|k| lo + ((start + k) % span) as u32)
        .find(|u| !taken.contains(u));
    let Some(uid) = free else {
        return Ok(None);
    };
    tx.execute(
        "INSERT OR REPLACE INTO host_uids (plugin, uid) VALUES (?1, ?2)",
        params![id, uid],
    )?;
    tx.commit()?;
    Ok(Some(uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each plugin keeps its uid; a plugin whose preferred uid is taken gets
    /// the next free one; a full range gives none; a narrowed range moves a
    /// plugin whose uid fell outside it.
    #[test]
    fn host_uids_are_unique_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let c = store.connect().unwrap();
        let range = (100, 102);
        assert_eq!(host_uid(&c, "a", range, 101).unwrap(), Some(101));
        // b hashes to a's uid: it gets the next.
        assert_eq!(host_uid(&c, "b", range, 101).unwrap(), Some(102));
        // c wraps around to the start of the range.
        assert_eq!(host_uid(&c, "c", range, 102).unwrap(), Some(100));
        assert_eq!(host_uid(&c, "d", range, 100).unwrap(), None, "range full");
        // Kept, whatever is preferred now.
        assert_eq!(host_uid(&c, "b", range, 100).unwrap(), Some(102));
        // A new range: b moves into it; a uid outside any range is not kept.
        assert_eq!(host_uid(&c, "b", (200, 201), 200).unwrap(), Some(200));
        assert_eq!(host_uid(&c, "d", range, 100).unwrap(), Some(102));
    }

    #[test]
    fn round_trip_and_v1_database_migrates() {
        let dir = tempfile::tempdir().unwrap();
        // A v1 database with a kv row.
        {
            let c = Connection::open(dir.path().join(crate::store::DB_FILE)).unwrap();
            c.execute_batch(
                "CREATE TABLE kv (ns TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
                   PRIMARY KEY (ns, key)) WITHOUT ROWID;
                 CREATE TABLE kv_usage (ns TEXT PRIMARY KEY, keys INTEGER NOT NULL,
                   bytes INTEGER NOT NULL) WITHOUT ROWID;
                 INSERT INTO kv VALUES ('plugin:a', 'k', 'v');
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let store = crate::store::Store::open(dir.path()).unwrap();
        let c = store.connect().unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, crate::store::SCHEMA_VERSION);
        assert_eq!(
            crate::store::kv::get(&c, "plugin:a", "k")
                .unwrap()
                .as_deref(),
            Some("v")
        );
        let r = Record {
            id: "a".into(),
            status: "verified".into(),
            version: "1.0.0".into(),
            highest: "1.0.0".into(),
            allow_downgrade: None,
            policy_status: "pending_review".into(),
            grants: vec!["kv:read".into()],
            egress: vec!["api.example.com:443".into()],
            allow_addresses: vec![],
        };
        put(&c, &r).unwrap();
        assert_eq!(get(&c, "a").unwrap(), Some(r.clone()));
        assert_eq!(all(&c).unwrap(), vec![r]);
        assert_eq!(get(&c, "b").unwrap(), None);
    }
}
