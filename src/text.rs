//! Text from untrusted sources (plugins, unverified manifests) made safe to show
//! on an operator's terminal or in a line-based log.

/// `s` with control and other non-printable characters (newlines, escape
/// sequences, bidi overrides) written as Rust escapes; quotes and backslashes,
/// and everything printable, left as they are. The result is one line that
/// cannot drive a terminal.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\'' | '\\' => out.push(c),
            c => out.extend(c.escape_debug()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        let forged = "x\n2026-01-01T00:00:00.000000Z  victim  host_call/kv.get \u{1b}[2J\u{202e}";
        assert_eq!(
            printable(forged),
            "x\\n2026-01-01T00:00:00.000000Z  victim  host_call/kv.get \\u{1b}[2J\\u{202e}"
        );
        let plain = r#"unknown_op: no op named "kv.gte" (café)"#;
        assert_eq!(printable(plain), plain);
    }
}
