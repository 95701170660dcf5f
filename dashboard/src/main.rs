//! `dashboard` binary: the live browser view is not built yet (tracked as its own issue).

fn main() {
    eprintln!("dashboard: not implemented yet; use `GET /status` on the gateway meanwhile");
    std::process::exit(2);
}
