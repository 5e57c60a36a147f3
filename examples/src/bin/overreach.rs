//! `overreach`: shows denials. It writes KV without declaring `kv:write`, dials
//! out with `http:egress` declared (denied unless the policy grants it, and
//! `unavailable` until an egress provider exists), and reads host stats without
//! `monitor:read`. Each attempt's typed answer is printed.

use serde_json::json;

fn main() {
    let (every, _) = warden_examples::args();
    let client = warden_examples::connect();
    client.repeat(every, |c| {
        let attempts = [
            ("kv.put", c.kv_put("stolen", "x").map(|()| json!({}))),
            (
                "net.dial",
                c.call("net.dial", json!({"host": "example.com", "port": 443})),
            ),
            ("monitor.stats", c.monitor_stats()),
            (
                "kv.get",
                c.kv_get("anything").map(|v| json!({ "value": v })),
            ),
        ];
        for (op, r) in attempts {
            match r {
                Ok(v) => println!("overreach: {op} allowed: {v}"),
                Err(e) => println!("overreach: {op} refused: {e}"),
            }
        }
    });
}
