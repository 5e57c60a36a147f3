//! `fetch HOST PORT [PATH]`: asks warden to dial `HOST:PORT` (`net.dial`, on the
//! operator's egress policy), sends a plain HTTP/1.0 GET over the socket warden
//! hands back, and prints the status line and the body length:
//!
//! ```text
//! fetch 127.0.0.1 8080 /
//! HTTP/1.0 200 OK
//! body 13 bytes
//! ```
//!
//! A refused dial prints `fetch err <code> <message>` and exits 1. With
//! `--every SECS` it fetches repeatedly until warden asks it to stop, printing
//! each outcome.

use std::io::{Read, Write};

fn main() {
    let (every, words) = warden_examples::args();
    let [host, port, rest @ ..] = words.as_slice() else {
        warden_examples::fail("usage: fetch [--every SECS] HOST PORT [PATH]");
    };
    let port: u16 = port
        .parse()
        .unwrap_or_else(|_| warden_examples::fail("PORT must be 1..=65535"));
    let path = rest.first().map_or("/", String::as_str);
    let client = warden_examples::connect();
    if every.is_none() {
        if let Err((code, msg)) = fetch(&client, host, port, path) {
            println!("{msg}");
            std::process::exit(code);
        }
        return;
    }
    client.repeat(every, |c| {
        if let Err((_, msg)) = fetch(c, host, port, path) {
            println!("{msg}");
        }
    });
}

/// One GET through `net.dial`; on failure, the exit code and the line to print.
fn fetch(
    client: &warden_plugin::Client,
    host: &str,
    port: u16,
    path: &str,
) -> Result<(), (i32, String)> {
    let mut stream = client
        .dial(host, port)
        .map_err(|e| (1, format!("fetch err {} {}", e.code(), e.message())))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| (2, format!("fetch: sending the request: {e}")))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| (2, format!("fetch: reading the response: {e}")))?;
    let text = String::from_utf8_lossy(&response);
    let status = text.lines().next().unwrap_or("");
    let body = text.find("\r\n\r\n").map_or(0, |i| response.len() - i - 4);
    println!("{status}");
    println!("body {body} bytes");
    Ok(())
}
