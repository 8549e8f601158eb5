use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

fn claimed(user: &str, reward: usize) -> Value {
    json!({"type": "reward.claimed", "data": {"rewardId": format!("r-{reward}"),
        "userId": user, "name": "Gold", "type": "coins", "value": reward}})
}

async fn get(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.http
        .get(format!("{}{path}", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn page(app: &TestApp, token: &str, path: &str) -> Value {
    let response = get(app, token, path).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

fn reward_ids(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["rewardId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_users_events_page_newest_first_and_stay_stable() {
    let app = spawn_app().await;
    for reward in 0..7 {
        assert_eq!(app.publish(&claimed("dana", reward)).await.status(), 202);
    }
    app.publish(&claimed("erin", 99)).await;
    let reader = app.token("support", "events:read");
    let first = page(&app, &reader, "/v1/users/dana/events?limit=3").await;
    assert_eq!(reward_ids(&first), vec!["r-6", "r-5", "r-4"]);
    // A newer event must not shift the pages already being walked.
    app.publish(&claimed("dana", 7)).await;
    let cursor = first["nextCursor"].as_str().unwrap();
    let second = page(
        &app,
        &reader,
        &format!("/v1/users/dana/events?limit=3&cursor={cursor}"),
    )
    .await;
    assert_eq!(reward_ids(&second), vec!["r-3", "r-2", "r-1"]);
    let cursor = second["nextCursor"].as_str().unwrap();
    let last = page(
        &app,
        &reader,
        &format!("/v1/users/dana/events?limit=3&cursor={cursor}"),
    )
    .await;
    assert_eq!(reward_ids(&last), vec!["r-0"]);
    assert!(last["nextCursor"].is_null());

    let filtered = page(&app, &reader, "/v1/users/dana/events?type=reward.expired").await;
    assert!(reward_ids(&filtered).is_empty());
    for bad in ["limit=0", "limit=101", "type=reward.lost", "cursor=bogus"] {
        let (status, refusal) =
            problem(get(&app, &reader, &format!("/v1/users/dana/events?{bad}")).await).await;
        assert_eq!(status, 422, "{bad}");
        let name = bad.split('=').next().unwrap();
        assert_eq!(pointers(&refusal), vec![format!("/query/{name}")]);
    }
}

#[tokio::test]
async fn a_player_reads_only_its_own_events() {
    let app = spawn_app().await;
    let mine: Value = app
        .publish(&claimed("frank", 1))
        .await
        .json()
        .await
        .unwrap();
    let theirs: Value = app.publish(&claimed("gina", 2)).await.json().await.unwrap();
    let player = app.token("frank", "events:read events:publish:self");
    assert_eq!(
        reward_ids(&page(&app, &player, "/v1/users/frank/events").await),
        vec!["r-1"]
    );
    assert_eq!(
        problem(get(&app, &player, "/v1/users/gina/events").await)
            .await
            .0,
        403
    );
    let own = get(
        &app,
        &player,
        &format!("/v1/events/{}", mine["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(own.status(), 200);
    let other = get(
        &app,
        &player,
        &format!("/v1/events/{}", theirs["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(
        problem(other).await.0,
        404,
        "another player's event is not even admitted to exist"
    );
    let publisher = app.backend_token();
    assert_eq!(
        problem(get(&app, &publisher, "/v1/users/frank/events").await)
            .await
            .0,
        403
    );
}

#[tokio::test]
async fn reads_are_cached_in_redis_and_refreshed_on_invalidation_or_expiry() {
    let app = spawn_app().await;
    app.publish(&claimed("hugo", 1)).await;
    let reader = app.token("support", "events:read");
    let path = "/v1/users/hugo/events";
    eventually(Duration::from_secs(5), || async {
        page(&app, &reader, path).await["events"][0]["delivery"]["state"] == "published"
    })
    .await;
    let key = format!("{}user_events:hugo", app.settings.redis_key_prefix);
    let mut redis = redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((1..=600).contains(&ttl), "a user's data lives 600 s: {ttl}");

    // Change the row behind the gateway's back: the cached page is what is served.
    sqlx::query("UPDATE events SET envelope = jsonb_set(envelope, '{data,name}', '\"Silver\"')")
        .execute(&app.db().await)
        .await
        .unwrap();
    assert_eq!(
        page(&app, &reader, path).await["events"][0]["data"]["name"],
        "Gold"
    );

    // A new event of the user invalidates the cache.
    app.publish(&claimed("hugo", 2)).await;
    let fresh = page(&app, &reader, path).await;
    assert_eq!(reward_ids(&fresh), vec!["r-2", "r-1"]);
    assert_eq!(fresh["events"][1]["data"]["name"], "Silver");

    // Expiry refreshes it too.
    sqlx::query("UPDATE events SET envelope = jsonb_set(envelope, '{data,name}', '\"Bronze\"')")
        .execute(&app.db().await)
        .await
        .unwrap();
    let _: () = redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(1)
        .query_async(&mut redis)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let names: HashSet<Value> = page(&app, &reader, path).await["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["name"].clone())
        .collect();
    assert_eq!(names, HashSet::from([json!("Bronze")]));
}

#[tokio::test]
async fn reads_bypass_a_dead_cache() {
    let proxy = crate::proxy::Proxy::start("127.0.0.1:6379").await;
    let mut settings = test_settings();
    settings.redis_host = proxy.addr.ip().to_string();
    settings.redis_port = proxy.addr.port();
    let app = spawn_app_with(settings).await;
    proxy.cut().await;
    app.publish(&claimed("ivan", 1)).await;
    let reader = app.token("support", "events:read");
    for _ in 0..6 {
        let listed = page(&app, &reader, "/v1/users/ivan/events").await;
        assert_eq!(reward_ids(&listed), vec!["r-1"]);
    }
    let health: Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(health["redis"]["connected"], false);
    assert_eq!(
        health["redis"]["circuit"], "open",
        "repeated failures open the breaker"
    );
    assert_eq!(health["postgres"]["circuit"], "closed");
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains(r#"gateway_circuit_open{dependency="redis"} 1"#),
        "{text}"
    );
}
