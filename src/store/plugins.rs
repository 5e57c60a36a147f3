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

#[cfg(test)]
mod tests {
    use super::*;

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
