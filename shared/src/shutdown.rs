//! One shutdown signal for every binary: Ctrl-C or SIGTERM.

/// Exit status of a worker's injected crash (`CRASH_RATE`): a supervisor
/// restarts it like any exit, but does not count a crash someone asked for
/// towards its crash-loop limit.
pub const INJECTED_CRASH_EXIT_CODE: i32 = 70;

use tokio_util::sync::CancellationToken;

/// Resolve on Ctrl-C or SIGTERM (what `docker stop` and the launcher send).
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested");
}

/// Cancel `token` when a shutdown signal arrives.
pub async fn on_signal(token: CancellationToken) {
    signal().await;
    token.cancel();
}
