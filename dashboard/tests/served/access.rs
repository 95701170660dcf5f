//! Keys, the login form, sessions, bearer keys, and protected mode.

use crate::harness::{args, http, snapshot, Dashboard, WAIT};
use jetinfer_testsupport::NatsServer;
use reqwest::header::{
    AUTHORIZATION, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE, WWW_AUTHENTICATE,
};
use reqwest::{Response, StatusCode};
use serde_json::Value;

const KEY: &str = "dash-key-7f3a";

/// The header, as text ("" when absent).
fn header(r: &Response, name: reqwest::header::HeaderName) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// `GET url` with an optional `Cookie` and `Authorization`.
async fn get(url: String, cookie: Option<&str>, bearer: Option<&str>) -> Response {
    let mut request = http().get(url);
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    if let Some(key) = bearer {
        request = request.header(AUTHORIZATION, format!("Bearer {key}"));
    }
    request.send().await.expect("dashboard reachable")
}

/// A 401 in the JSON envelope, with the bearer challenge.
async fn assert_unauthorized_json(r: Response) {
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, WWW_AUTHENTICATE).starts_with("Bearer"));
    let body: Value = r.json().await.expect("a JSON body");
    assert_eq!(body["error"], "unauthorized", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("Bearer"),
        "{body}"
    );
}

/// POST the login form with `key`.
async fn login(url: &str, key: &str) -> Response {
    http()
        .post(format!("{url}/login"))
        .form(&[("key", key)])
        .send()
        .await
        .expect("dashboard reachable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keys_only_a_login_or_a_bearer_key_opens_the_dashboard() {
    let nats = NatsServer::start();
    let dashboard = Dashboard::start(args(&nats, "dashboard", &["--keys", KEY])).await;
    let url = dashboard.url.clone();

    // Nobody: the form instead of the page, 401s from the data.
    let r = get(format!("{url}/"), None, None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body = r.text().await.unwrap();
    assert!(body.contains(r#"id="login""#), "{body}");
    assert!(!body.contains(r#"id="workers""#), "no dashboard markup");
    for path in ["/api/snapshot", "/api/stream"] {
        assert_unauthorized_json(get(format!("{url}{path}"), None, None).await).await;
        assert_unauthorized_json(get(format!("{url}{path}"), None, Some("wrong")).await).await;
        let forged = format!("jetinfer_session={KEY}");
        assert_unauthorized_json(get(format!("{url}{path}"), Some(&forged), None).await).await;
    }
    assert_eq!(
        get(format!("{url}/healthz"), None, None).await.status(),
        200
    );
    assert_eq!(
        get(format!("{url}/style.css"), None, None).await.status(),
        200
    );

    // Scripts: the bearer key opens /api/*, not the page.
    let r = get(format!("{url}/api/snapshot"), None, Some(KEY)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.json::<Value>().await.unwrap()["workers"].is_array());
    let r = get(format!("{url}/api/stream"), None, Some(KEY)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(header(&r, CONTENT_TYPE).starts_with("text/event-stream"));
    drop(r);
    let r = get(format!("{url}/"), None, Some(KEY)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A wrong key: the form again, 401, no cookie, no hint.
    let r = login(&url, "dash-key-7f3b").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(SET_COOKIE).is_none());
    let body = r.text().await.unwrap();
    assert!(
        body.contains(r#"id="login""#) && body.contains("not accepted"),
        "{body}"
    );
    let empty = http().post(format!("{url}/login")).send().await.unwrap();
    assert_eq!(empty.status(), StatusCode::UNAUTHORIZED, "no form at all");

    // The right key: a session cookie, HttpOnly and SameSite=Strict, holding
    // a token, not the key.
    let r = login(&url, KEY).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&r, LOCATION), "/");
    let set = header(&r, SET_COOKIE);
    let attributes: Vec<&str> = set.split(';').map(str::trim).collect();
    assert!(attributes.contains(&"HttpOnly"), "{set}");
    assert!(attributes.contains(&"SameSite=Strict"), "{set}");
    assert!(!set.contains(KEY), "the cookie is not the key: {set}");
    let cookie = attributes[0].to_owned();
    assert!(
        cookie.starts_with("jetinfer_session=") && cookie.len() > 40,
        "{cookie}"
    );

    let r = get(format!("{url}/"), Some(&cookie), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(page.contains(r#"id="workers""#) && page.contains(r#"action="/logout""#));
    let r = get(format!("{url}/api/snapshot"), Some(&cookie), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut stream = get(format!("{url}/api/stream"), Some(&cookie), None).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let first = stream.chunk().await.unwrap().expect("a first snapshot");
    assert!(String::from_utf8_lossy(&first).contains("event: snapshot"));

    // Logout: the cookie is cleared, the session gone, the open stream ends.
    let r = http()
        .post(format!("{url}/logout"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(header(&r, SET_COOKIE).contains("Max-Age=0"));
    assert_unauthorized_json(get(format!("{url}/api/snapshot"), Some(&cookie), None).await).await;
    assert_eq!(
        get(format!("{url}/"), Some(&cookie), None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let ended = tokio::time::timeout(WAIT, async {
        while stream.chunk().await.ok().flatten().is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream of a closed session ends");

    dashboard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_keys_open_the_dashboard_when_it_has_none_of_its_own() {
    let nats = NatsServer::start();
    let dashboard = Dashboard::start(args(&nats, "dashboard", &["--api-keys", "gw-1,gw-2"])).await;
    let r = get(
        format!("{}/api/snapshot", dashboard.url),
        None,
        Some("gw-2"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        login(&dashboard.url, "gw-1").await.status(),
        StatusCode::SEE_OTHER
    );
    dashboard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_a_loopback_dashboard_is_open_as_before() {
    let nats = NatsServer::start();
    let dashboard = Dashboard::start(args(&nats, "dashboard", &[])).await;
    let url = &dashboard.url;
    let r = get(format!("{url}/"), None, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(page.contains(r#"id="workers""#) && !page.contains("/logout"));
    assert!(snapshot(&http(), url).await.is_some());
    let r = login(url, "anything").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "nothing to log in to");
    dashboard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_mode_refuses_an_open_dashboard_on_the_network() {
    let nats = &NatsServer::start();
    let open = |extra: &'static [&'static str]| async move {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let run = jetinfer_dashboard::run(args(nats, "dashboard", extra), listener, stop.clone());
        let run = tokio::spawn(run);
        // Refused at once, or serving until stopped.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        stop.cancel();
        run.await.unwrap()
    };
    let refused = open(&[]).await.expect_err("no key, no opt-out").to_string();
    assert!(
        refused.contains("DASHBOARD_KEYS=") && refused.contains("ALLOW_ANONYMOUS=true"),
        "{refused}"
    );
    open(&["--allow-anonymous"]).await.expect("risk accepted");
    open(&["--keys", KEY]).await.expect("a key is required");
}

/// `docker compose stop` waits 15 s, then kills: an open page's live stream
/// must not hold the dashboard's stop.
#[tokio::test]
async fn an_open_live_stream_ends_when_the_dashboard_stops() {
    let nats = NatsServer::start();
    let dashboard = Dashboard::start(args(&nats, "dashboard", &[])).await;
    let mut live = get(format!("{}/api/stream", dashboard.url), None, None).await;
    assert_eq!(live.status(), StatusCode::OK);
    live.chunk()
        .await
        .expect("the stream is open")
        .expect("a first event");
    tokio::time::timeout(WAIT, dashboard.stop())
        .await
        .expect("the dashboard stops while a page streams");
    let rest = tokio::time::timeout(WAIT, async {
        while let Ok(Some(_)) = live.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stream ended with the dashboard");
}
