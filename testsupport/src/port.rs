//! Free ports, for servers a test starts that must be told their port.

/// A TCP port free on loopback now. Another process may take it before the
/// caller binds it; tests accept that rare race for ports that must be known
/// in advance (a child's listen address, a cluster's routes).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
