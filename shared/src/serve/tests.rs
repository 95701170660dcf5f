use super::*;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn the_cap_leaves_room_for_everything_else() {
    assert_eq!(fit_cap(4096, 1_048_576), 4096);
    assert_eq!(fit_cap(4096, 1024), 1024 - FD_RESERVE);
    assert_eq!(fit_cap(4096, 10), 1);
}

/// `jetinfer_http_connections_shed_total` as `/metrics` shows it (0 before
/// the first). Other tests in this process may shed too: compare, never equate.
fn shed_count() -> u64 {
    crate::metrics::render()
        .lines()
        .find_map(|l| l.strip_prefix("jetinfer_http_connections_shed_total "))
        .map_or(0, |v| v.trim().parse().unwrap_or(0))
}

/// Start [`serve`] on a free port with one connection slot and a one-second
/// header timeout; returns its address and the token that stops it.
async fn start() -> (std::net::SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let args = ServeArgs {
        header_timeout_s: 1,
        idle_timeout_s: 60,
        max_connections: 1,
        http2_max_streams: 64,
    };
    // `/together` answers only once 50 requests are in it at the same time.
    let together = Arc::new(tokio::sync::Barrier::new(50));
    let app = Router::new()
        .route("/", axum::routing::get(|| async { "ok" }))
        .route(
            "/together",
            axum::routing::get(move || async move {
                together.wait().await;
                "together"
            }),
        );
    tokio::spawn(serve(listener, app, args, stop.clone()));
    (addr, stop)
}

#[tokio::test]
async fn half_sent_heads_are_cut_off_and_the_overflow_is_told_why() {
    let shed_before = shed_count();
    let (addr, stop) = start().await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Let the server take the only slot with `slow` before the next one comes.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut over = TcpStream::connect(addr).await.unwrap();
    over.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    over.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.ends_with(r#"retry later"}"#), "{answer}");
    assert!(shed_count() > shed_before, "the shed connection is counted");

    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a half-sent head is still open after 3 s");
    assert!(started.elapsed() < Duration::from_secs(3));
    stop.cancel();
}

/// hyper starts only at a connection's first byte; the first head's deadline
/// still counts from the accept, so a late first byte buys no extra time.
#[tokio::test]
async fn the_first_head_is_due_a_header_timeout_after_the_accept() {
    let (addr, stop) = start().await;
    for wait_first in [None, Some(Duration::from_millis(700))] {
        let started = Instant::now();
        let mut client = TcpStream::connect(addr).await.unwrap();
        if let Some(wait) = wait_first {
            tokio::time::sleep(wait).await;
            client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        }
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(3), client.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "still open after 3 s ({wait_first:?})");
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(1500),
            "closed after {took:?} ({wait_first:?})"
        );
        assert!(
            rest.is_empty(),
            "nothing is answered to a head that never came"
        );
    }
    stop.cancel();
}

/// HTTP/2 without TLS (prior knowledge) is served on the same port, many
/// requests in flight on one connection: with a single connection slot, 50
/// requests that are only answered once all 50 are in the server must share it.
#[tokio::test]
async fn fifty_requests_in_flight_share_one_http2_connection() {
    let (addr, stop) = start().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let url = format!("http://{addr}/together");
    let answers = futures::future::join_all((0..50).map(|_| async {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        (response.status(), response.text().await.unwrap())
    }));
    let answers = tokio::time::timeout(Duration::from_secs(10), answers)
        .await
        .expect("all 50 were never in flight at once");
    for (status, body) in answers {
        assert_eq!((status.as_u16(), body.as_str()), (200, "together"));
    }
    stop.cancel();
}

/// A burst of connections far beyond tokio's default accept queue (1024) all
/// complete their handshakes while nothing accepts them yet: none is dropped
/// to SYN retransmits. (The 5 s only bounds "never"; with the old queue the
/// excess stay unconnected for minutes.)
#[tokio::test]
async fn a_burst_of_connections_fits_the_accept_queue() {
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("Linux: /proc/sys/net/core/somaxconn")
        .trim()
        .parse()
        .unwrap();
    let burst = somaxconn.min(3000);
    raise_fd_limit(); // the burst's sockets, as serve() would

    assert!(
        burst > 1100,
        "net.core.somaxconn {somaxconn} is too small to test"
    );
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let connects =
        (0..burst).map(|_| tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)));
    let connected = futures::future::join_all(connects)
        .await
        .into_iter()
        .filter(|c| matches!(c, Ok(Ok(_))))
        .count();
    assert_eq!(
        connected, burst,
        "handshakes dropped by a full accept queue"
    );
    drop(listener);
}
