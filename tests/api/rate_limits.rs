//! Rate limits: a burst beyond the budget is 429, gateways share one budget in Redis, and
//! a Redis outage falls back to a budget per process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;
use crate::proxy::Proxy;
use crate::webhooks::{now, signature};

const BURST: usize = 5;

fn limited_settings() -> event_gateway::config::Settings {
    let mut settings = test_settings();
    settings.rate_limit_rps = 1;
    settings.rate_limit_burst = BURST as u32;
    settings
}

/// Sends `count` publishes with `token`, spread over `apps` in turn; the statuses and how
/// long it took. GCRA lets `BURST` through at once and one more per elapsed second.
async fn burst(apps: &[&TestApp], token: &str, count: usize) -> (Vec<u16>, Duration) {
    let started = Instant::now();
    let mut statuses = Vec::new();
    for i in 0..count {
        let app = apps[i % apps.len()];
        let response = app
            .post_json("/v1/events", token, &event("analytics.event_tracked"))
            .await;
        statuses.push(response.status().as_u16());
    }
    (statuses, started.elapsed())
}

/// `passed` is the status of a request the limiter let through.
fn assert_budget_held(statuses: &[u16], elapsed: Duration, passed: u16) {
    let allowed = statuses.iter().filter(|s| **s == passed).count();
    let refilled = elapsed.as_secs() as usize;
    assert!(
        (BURST..=BURST + refilled).contains(&allowed),
        "{allowed} allowed in {elapsed:?}: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == passed || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(
        &statuses[..BURST],
        &[passed; BURST],
        "the burst passes first"
    );
}

#[tokio::test]
async fn a_burst_beyond_the_budget_gets_429_with_retry_after_and_ratelimit_headers() {
    let app = spawn_app_with(limited_settings()).await;
    let token = app.token("spammy-backend", "events:publish");
    let started = Instant::now();
    let first = app
        .post_json("/v1/events", &token, &event("analytics.event_tracked"))
        .await;
    assert_eq!(first.status(), 202);
    assert_eq!(header(&first, "ratelimit-limit"), "5");
    assert_eq!(header(&first, "ratelimit-remaining"), "4");

    let (statuses, _) = burst(&[&app], &token, 9).await;
    let mut all = vec![202];
    all.extend(&statuses);
    assert_budget_held(&all, started.elapsed(), 202);

    // The first refusal from here on (a refill may let one more through first).
    let refused = loop {
        let response = app
            .post_json("/v1/events", &token, &event("analytics.event_tracked"))
            .await;
        if response.status() == 429 {
            break response;
        }
    };
    let retry_after: u64 = header(&refused, "retry-after").parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(header(&refused, "ratelimit-remaining"), "0");
    let (status, answer) = problem(refused).await;
    assert_eq!(status, 429);
    assert_eq!(answer["type"], "urn:problem:event-gateway:rate-limited");

    // Budgets are per caller: another token is unaffected.
    let other = app.token("quiet-backend", "events:publish");
    let response = app
        .post_json("/v1/events", &other, &event("analytics.event_tracked"))
        .await;
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn a_batch_counts_as_its_number_of_events() {
    let app = spawn_app_with(limited_settings()).await;
    let token = app.token("batcher", "events:publish");
    let four = json!({"events": vec![event("analytics.event_tracked"); 4]});
    let response = app.post_json("/v1/events/batch", &token, &four).await;
    assert_eq!(response.status(), 202);
    assert_eq!(header(&response, "ratelimit-remaining"), "1");
    let response = app.post_json("/v1/events/batch", &token, &four).await;
    assert_eq!(response.status(), 429, "4 more events do not fit in 1");

    // More events than the burst can never fit: not a 429 to retry for ever.
    let six = json!({"events": vec![event("analytics.event_tracked"); 6]});
    let fresh = app.token("big-batcher", "events:publish");
    let (status, answer) = problem(app.post_json("/v1/events/batch", &fresh, &six).await).await;
    assert_eq!(status, 413);
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("RATE_LIMIT_BURST")
    );
    assert_eq!(app.depth(&app.queue("analytics")).await, 4);
}

#[tokio::test]
async fn webhook_sources_and_forgers_have_budgets_of_their_own() {
    let mut settings = limited_settings();
    settings.webhook_secrets = "shop=shop-secret".parse().unwrap();
    let app = spawn_app_with(settings).await;
    let deliver = |id: &'static str, events: usize, secret: &'static [u8]| {
        let body =
            serde_json::to_vec(&json!({"events": vec![event("analytics.event_tracked"); events]}))
                .unwrap();
        let timestamp = now();
        let request = app
            .http
            .post(format!("{}/v1/webhooks/shop", app.base))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature(secret, id, timestamp, &body))
            .body(body);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(deliver("msg_1", 4, b"shop-secret").await, 202);
    assert_eq!(
        deliver("msg_2", 2, b"shop-secret").await,
        429,
        "2 do not fit in 1"
    );

    // Forged deliveries are paid for by their address, not by the source they name.
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(deliver("msg_3", 1, b"forged").await);
    }
    assert_budget_held(&statuses, started.elapsed(), 401);
    assert_eq!(app.depth(&app.queue("analytics")).await, 4);
}

#[tokio::test]
async fn calls_without_credentials_are_limited_by_client_address() {
    let app = spawn_app_with(limited_settings()).await;
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let response = app
            .http
            .post(format!("{}/v1/events", app.base))
            .bearer_auth("not-a-token")
            .json(&event("analytics.event_tracked"))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_budget_held(&statuses, started.elapsed(), 401);
}

#[tokio::test]
async fn two_gateways_share_one_budget() {
    let settings = limited_settings();
    let one = spawn_app_with(settings.clone()).await;
    let two = spawn_app_with(settings).await;
    let token = one.token("everywhere", "events:publish");
    let (statuses, elapsed) = burst(&[&one, &two], &token, 10).await;
    assert_budget_held(&statuses, elapsed, 202);
}

#[tokio::test]
async fn busy_callers_spend_leases_and_two_gateways_still_share_one_budget() {
    // 100 events/s with a burst of 160: each process may lease 10 events (a tenth of a
    // second's rate, under an eighth of the burst).
    const RATE: usize = 100;
    const LEASED: usize = 160;
    const CAP: usize = 10;
    let mut settings = test_settings();
    settings.rate_limit_rps = RATE as u32;
    settings.rate_limit_burst = LEASED as u32;
    let one = spawn_app_with(settings.clone()).await;
    let two = spawn_app_with(settings).await;
    let token = one.token("busy-backend", "events:publish");
    let started = Instant::now();
    let dry = AtomicBool::new(false);
    let workers = (0..16).map(|worker| {
        let app = if worker % 2 == 0 { &one } else { &two };
        let token = token.clone();
        let dry = &dry;
        async move {
            let mut statuses = Vec::new();
            // Long enough for several lease windows (100 ms) to pass. Paced at about 800
            // events/s in all, so the burst lasts past the first window (which leases
            // nothing: a lease is sized from the window before) on a fast machine too; on
            // a loaded one, they go on until one of them has seen the budget run dry.
            while started.elapsed() < Duration::from_millis(500)
                || (!dry.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(5))
            {
                let response = app
                    .post_json("/v1/events", &token, &event("analytics.event_tracked"))
                    .await;
                statuses.push(response.status().as_u16());
                if response.status() == 429 {
                    dry.store(true, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            statuses
        }
    });
    let statuses: Vec<u16> = futures_util::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let elapsed = started.elapsed();
    let allowed = statuses.iter().filter(|s| **s == 202).count();
    assert!(
        statuses.iter().all(|s| *s == 202 || *s == 429),
        "{statuses:?}"
    );
    // Leased events come out of the shared budget, so no more pass than it holds; a
    // process holds at most one lease, and lapsed events are given back.
    let refilled = (RATE as f64 * elapsed.as_secs_f64()).ceil() as usize + 1;
    assert!(
        (LEASED - 2 * CAP..=LEASED + refilled).contains(&allowed),
        "{allowed} of {} allowed in {elapsed:?}",
        statuses.len()
    );
    let mut from_leases = 0.0;
    let mut from_redis = 0.0;
    for app in [&one, &two] {
        let text = app.get("/metrics").await.text().await.unwrap();
        from_leases += metric(
            &text,
            r#"gateway_rate_limit_decisions_total{outcome="allowed",store="lease"}"#,
        );
        from_redis += metric(
            &text,
            r#"gateway_rate_limit_decisions_total{outcome="allowed",store="redis"}"#,
        );
    }
    assert_eq!(from_leases + from_redis, allowed as f64);
    // Leases are sized from the last window's demand: from the second window on, each
    // process serves requests without a Redis call.
    assert!(
        from_leases >= CAP as f64,
        "{from_leases} allowed from leases, {from_redis} from Redis"
    );
}

#[tokio::test]
async fn leases_charge_only_what_was_sent_and_a_refusal_charges_nothing() {
    // Leasing on (as above): after a run of single events and a batch, the budget left is
    // the burst less what was sent (plus what refilled meanwhile), not less leased extras.
    const RATE: u64 = 100;
    const LEASED: u64 = 160;
    let mut settings = test_settings();
    settings.rate_limit_rps = RATE as u32;
    settings.rate_limit_burst = LEASED as u32;
    let app = spawn_app_with(settings).await;
    let token = app.token("steady-backend", "events:publish");
    let batch = |count: u64| json!({"events": (0..count).map(|_| event("analytics.event_tracked")).collect::<Vec<_>>()});
    let started = Instant::now();
    for _ in 0..30 {
        let response = app
            .post_json("/v1/events", &token, &event("analytics.event_tracked"))
            .await;
        assert_eq!(response.status(), 202);
    }
    let response = app.post_json("/v1/events/batch", &token, &batch(20)).await;
    assert_eq!(response.status(), 202);
    let remaining: u64 = header(&response, "ratelimit-remaining").parse().unwrap();
    let refilled = (RATE as f64 * started.elapsed().as_secs_f64()).ceil() as u64 + 1;
    assert!(
        (LEASED - 50..=LEASED - 50 + refilled).contains(&remaining),
        "{remaining} left of {LEASED} after 50 events in {:?}",
        started.elapsed()
    );
    // A batch that does not fit is refused and takes nothing: a small one still passes.
    let too_many = (remaining + 40).min(LEASED);
    let refused = app
        .post_json("/v1/events/batch", &token, &batch(too_many))
        .await;
    assert_eq!(
        refused.status(),
        429,
        "{too_many} events with {remaining} left"
    );
    let small = app.post_json("/v1/events/batch", &token, &batch(5)).await;
    assert_eq!(small.status(), 202);
    assert_eq!(app.depth(&app.queue("analytics")).await, 55);
}

#[tokio::test]
async fn with_redis_down_each_gateway_keeps_the_budget_itself() {
    let proxy = Proxy::start("127.0.0.1:6379").await;
    let mut settings = limited_settings();
    settings.redis_host = proxy.addr.ip().to_string();
    settings.redis_port = proxy.addr.port();
    let app = spawn_app_with(settings).await;
    proxy.cut().await;
    let token = app.token("redis-less", "events:publish");
    let (statuses, elapsed) = burst(&[&app], &token, 10).await;
    assert_budget_held(&statuses, elapsed, 202);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"gateway_rate_limit_decisions_total{outcome="limited",store="local"}"#),
        "{metrics}"
    );
}
