//! `echo`: says its arguments back through `log.write` and on stdout.

use warden_plugin::Level;

fn main() {
    let (every, words) = warden_examples::args();
    let text = if words.is_empty() {
        "hello".to_owned()
    } else {
        words.join(" ")
    };
    let client = warden_examples::connect();
    client.repeat(every, |c| {
        match c.log(Level::Info, &format!("echo: {text}"), &[]) {
            Ok(()) => println!("echo: {text}"),
            Err(e) => println!("echo: log.write failed: {e}"),
        }
    });
}
