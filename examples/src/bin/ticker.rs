//! `ticker`: a long-running plugin for `warden serve`. Every two seconds it counts
//! in its key-value namespace (`kv:write`, granted) and asks for host statistics
//! (`monitor:read`, declared but not granted by the demo's policy), printing what
//! warden allowed and denied. It stops when warden sends `shutdown`.

use std::time::Duration;

use warden_plugin::Client;

fn main() {
    let client = match Client::connect_verified() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ticker: connect: {e:?}");
            std::process::exit(1);
        }
    };
    let mut n: u64 = client
        .kv_get("ticks")
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    loop {
        n += 1;
        match client.kv_put("ticks", &n.to_string()) {
            Ok(()) => println!("tick {n}: kv.put allowed"),
            Err(e) => println!("tick {n}: kv.put {}: {}", e.code(), e.message()),
        }
        match client.monitor_stats() {
            Ok(_) => println!("tick {n}: monitor.stats allowed"),
            Err(e) => println!("tick {n}: monitor.stats {}: {}", e.code(), e.message()),
        }
        if let Some(deadline) = client.wait_for_shutdown(Some(Duration::from_secs(2))) {
            println!("ticker: shutdown (deadline {deadline} ms), stopping after {n} ticks");
            return;
        }
    }
}
