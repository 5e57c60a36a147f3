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
//! A refused dial prints `fetch err <code> <message>` and exits 1.

use std::io::{Read, Write};

fn main() {
    let (_, words) = warden_examples::args();
    let [host, port, rest @ ..] = words.as_slice() else {
        warden_examples::fail("usage: fetch HOST PORT [PATH]");
    };
    let port: u16 = port
        .parse()
        .unwrap_or_else(|_| warden_examples::fail("PORT must be 1..=65535"));
    let path = rest.first().map_or("/", String::as_str);
    let client = warden_examples::connect();
    let mut stream = match client.dial(host, port) {
        Ok(s) => s,
        Err(e) => {
            println!("fetch err {} {}", e.code(), e.message());
            std::process::exit(1);
        }
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()) {
        warden_examples::fail(&format!("sending the request: {e}"));
    }
    let mut response = Vec::new();
    if let Err(e) = stream.read_to_end(&mut response) {
        warden_examples::fail(&format!("reading the response: {e}"));
    }
    let text = String::from_utf8_lossy(&response);
    let status = text.lines().next().unwrap_or("");
    let body = text.find("\r\n\r\n").map_or(0, |i| response.len() - i - 4);
    println!("{status}");
    println!("body {body} bytes");
}
