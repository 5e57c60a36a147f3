//! `hello`: the smallest plugin. It prints who and where it is, so a newcomer can
//! see what a confined plugin sees.

fn main() {
    let id = std::env::var(warden_plugin::ID_ENV).unwrap_or_else(|_| "(not under warden)".into());
    let fd = std::env::var(warden_plugin::FD_ENV).unwrap_or_else(|_| "-".into());
    let entries = |dir: &str| {
        std::fs::read_dir(dir)
            .map(|d| d.filter_map(Result::ok).count().to_string())
            .unwrap_or_else(|e| format!("unreadable ({e})"))
    };
    println!(
        "hello from plugin {id}: broker fd {fd}, {} entries in /, {} in /proc",
        entries("/"),
        entries("/proc")
    );
}
