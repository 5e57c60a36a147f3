//! `kv-counter`: counts its runs in its KV namespace (`runs`), so the count
//! survives restarts of the plugin and of warden.

use serde_json::json;
use warden_plugin::Level;

fn main() {
    let (every, _) = warden_examples::args();
    let client = warden_examples::connect();
    client.repeat(every, |c| {
        let result = c.kv_get("runs").and_then(|old| {
            let n = old.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + 1;
            c.kv_put("runs", &n.to_string())?;
            c.log(Level::Info, "counted a run", &[("runs", json!(n))])?;
            Ok(n)
        });
        match result {
            Ok(n) => println!("kv-counter: run {n}"),
            Err(e) => println!("kv-counter: {e}"),
        }
    });
}
