//! `hostcall`: performs the host calls named on its command line, in order, and
//! prints each typed answer on one line. A handy probe for operators and tests:
//!
//! ```text
//! hostcall kv.put '{"key":"a","value":"1"}' kv.get '{"key":"a"}' sleep 5
//! kv.put ok {}
//! kv.get ok {"value":"1"}
//! ```
//!
//! `sleep SECS` pauses (answering pings meanwhile); `wait` waits for shutdown.
//! File helpers over `fs.open` (the SDK's `open`): `fs.read PATH` prints the
//! content (`fs.read ok "..."`), `fs.write PATH DATA` and `fs.append PATH DATA`
//! write through the descriptor warden passed.

use std::time::Duration;

fn main() {
    let (_, words) = warden_examples::args();
    let client = warden_examples::connect();
    let mut it = words.into_iter();
    while let Some(op) = it.next() {
        match op.as_str() {
            "sleep" => {
                let secs: f64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(1.0);
                std::thread::sleep(Duration::from_secs_f64(secs));
                continue;
            }
            "fs.read" | "fs.write" | "fs.append" => {
                let path = it.next().unwrap_or_default();
                files(&client, &op, &path, &mut it);
                continue;
            }
            "wait" => {
                client.wait_for_shutdown(None);
                println!("shutdown requested");
                continue;
            }
            _ => {}
        }
        let args = it.next().unwrap_or_else(|| "{}".into());
        let args: serde_json::Value = serde_json::from_str(&args)
            .unwrap_or_else(|e| warden_examples::fail(&format!("{op}: args are not JSON: {e}")));
        match client.call(&op, args) {
            Ok(v) => println!("{op} ok {v}"),
            Err(e) => println!("{op} err {} {}", e.code(), e.message()),
        }
    }
}

fn files(
    client: &warden_plugin::Client,
    op: &str,
    path: &str,
    it: &mut impl Iterator<Item = String>,
) {
    use std::io::{Read, Write};
    use warden_plugin::OpenFlags;
    let flags = match op {
        "fs.read" => OpenFlags::READ,
        "fs.write" => OpenFlags::WRITE,
        _ => OpenFlags::APPEND,
    };
    let data = if op == "fs.read" {
        String::new()
    } else {
        it.next().unwrap_or_default()
    };
    match client.open(path, flags) {
        Err(e) => println!("{op} err {} {}", e.code(), e.message()),
        Ok(mut f) if op == "fs.read" => {
            let mut s = String::new();
            match f.read_to_string(&mut s) {
                Ok(n) if n > 256 => println!("{op} ok {n} bytes"),
                Ok(_) => println!("{op} ok {s:?}"),
                Err(e) => println!("{op} io {e}"),
            }
        }
        Ok(mut f) => match f.write_all(data.as_bytes()) {
            Ok(()) => println!("{op} ok {}", data.len()),
            Err(e) => println!("{op} io {e}"),
        },
    }
}
