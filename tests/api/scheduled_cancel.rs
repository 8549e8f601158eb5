//! Scheduled events cancelled, and sent again: who may cancel, what a cancel promises,
//! and how a retry is answered once its time has passed.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::scheduled::{cancel, collect, expiry, in_, read, state_of};

#[tokio::test]
async fn a_cancelled_event_never_goes_out_and_one_that_went_out_cannot_be_cancelled() {
    let app = spawn_app().await;
    let due = in_(Duration::from_secs(2));
    let cancelled: Value = app
        .publish(&expiry("user-3", "never", &due))
        .await
        .json()
        .await
        .expect("receipt");
    let kept: Value = app
        .publish(&expiry("user-3", "kept", &due))
        .await
        .json()
        .await
        .expect("receipt");
    let (cancelled, kept) = (
        cancelled["id"].as_str().unwrap(),
        kept["id"].as_str().unwrap(),
    );
    let backend = app.backend_token();
    assert_eq!(cancel(&app, &backend, cancelled).await.status(), 204);
    assert_eq!(
        cancel(&app, &backend, cancelled).await.status(),
        204,
        "again: done already"
    );
    assert_eq!(state_of(&app, cancelled).await["state"], "cancelled");
    let got = collect(&app, &app.queue("reward"), 2, Duration::from_secs(6)).await;
    let rewards: Vec<&str> = got
        .iter()
        .map(|(body, _)| body["data"]["rewardId"].as_str().unwrap())
        .collect();
    assert_eq!(rewards, ["kept"], "the cancelled one never went out");
    eventually(Duration::from_secs(5), || async {
        state_of(&app, kept).await["state"] == "published"
    })
    .await;
    let (status, problem) = problem(cancel(&app, &backend, kept).await).await;
    assert_eq!(status, 409);
    assert_eq!(problem["type"], "urn:problem:event-gateway:not-cancellable");
    assert_eq!(state_of(&app, cancelled).await["state"], "cancelled");
}

#[tokio::test]
async fn only_the_scheduler_or_an_admin_cancels_and_a_player_only_its_own() {
    let app = spawn_app().await;
    let due = in_(Duration::from_secs(600));
    let player = app.token("player-5", "events:publish:self events:read");
    let tracked = json!({"type": "analytics.event_tracked", "deliverAt": due,
        "data": {"analyticsId": "a1", "userId": "player-5", "type": "click", "category": "ui",
            "event": "b"}});
    let mine: Value = app
        .post_json("/v1/events", &player, &tracked)
        .await
        .json()
        .await
        .expect("receipt");
    assert_eq!(mine["status"], "scheduled");
    let theirs: Value = app
        .publish(&expiry("player-6", "r", &due))
        .await
        .json()
        .await
        .expect("receipt");
    let (mine, theirs) = (mine["id"].as_str().unwrap(), theirs["id"].as_str().unwrap());
    let other_backend = app.token("other-backend", "events:publish");
    let (status, _) = problem(cancel(&app, &other_backend, theirs).await).await;
    assert_eq!(status, 403, "another backend did not schedule it");
    let same_sub_read_only = app.token("game-backend", "events:read");
    let (status, _) = problem(cancel(&app, &same_sub_read_only, theirs).await).await;
    assert_eq!(
        status, 403,
        "the scheduler's sub, without the right to publish it"
    );
    let for_me: Value = app
        .publish(&expiry("player-5", "r", &due))
        .await
        .json()
        .await
        .expect("receipt");
    let for_me = for_me["id"].as_str().unwrap();
    let (status, _) = problem(cancel(&app, &player, for_me).await).await;
    assert_eq!(status, 403, "its own user's, but a backend's to cancel");
    let (status, _) = problem(cancel(&app, &player, theirs).await).await;
    assert_eq!(
        status, 404,
        "a player learns nothing of another user's events"
    );
    let (status, _) = problem(read(&app, &player, &format!("/v1/events/{theirs}")).await).await;
    assert_eq!(status, 404);
    let unknown = uuid::Uuid::now_v7().to_string();
    let (status, _) = problem(cancel(&app, &app.backend_token(), &unknown).await).await;
    assert_eq!(status, 404);
    assert_eq!(cancel(&app, &player, mine).await.status(), 204);
    let admin = app.token("ops", "admin");
    assert_eq!(cancel(&app, &admin, theirs).await.status(), 204);
    assert_eq!(state_of(&app, theirs).await["state"], "cancelled");
}

#[tokio::test]
async fn a_retry_after_the_time_has_passed_gets_the_first_answer() {
    let app = spawn_app().await;
    let body = expiry("user-2", "r", &in_(Duration::from_millis(1500)));
    let headers = [("idempotency-key", "expire-r-for-user-2")];
    let token = app.backend_token();
    let send = || app.post_as("/v1/events", "application/json", &token, &headers, &body);
    let first = send().await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("receipt");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let retry = send().await;
    assert_eq!(retry.status(), 202, "not a 422 for a time now past");
    assert_eq!(retry.json::<Value>().await.expect("receipt"), first);
    let got = collect(&app, &app.queue("reward"), 2, Duration::from_secs(4)).await;
    assert_eq!(got.len(), 1, "published once");
}

#[tokio::test]
async fn a_batch_retried_with_its_own_ids_after_the_time_passed_gets_where_they_stand() {
    let app = spawn_app().await;
    let batch = json!({"events": [
        {"id": uuid::Uuid::new_v4(), "type": "quest.started",
            "deliverAt": in_(Duration::from_millis(1500)), "data": valid_data("quest.started")},
    ]});
    let first = app
        .post_json("/v1/events/batch", &app.backend_token(), &batch)
        .await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("receipt");
    let queue = app.queue("quest");
    assert_eq!(
        collect(&app, &queue, 1, Duration::from_secs(5)).await.len(),
        1
    );
    let retry = app
        .post_json("/v1/events/batch", &app.backend_token(), &batch)
        .await;
    assert_eq!(retry.status(), 202, "not a 422: the event was taken");
    let retry: Value = retry.json().await.expect("receipt");
    assert_eq!(retry["results"][0]["id"], first["results"][0]["id"]);
    assert_eq!(retry["results"][0]["status"], "published");
    assert!(
        collect(&app, &queue, 1, Duration::from_secs(1))
            .await
            .is_empty(),
        "not published again"
    );
    let fresh = json!({"events": [{"id": uuid::Uuid::new_v4(), "type": "quest.started",
        "deliverAt": in_(Duration::ZERO), "data": valid_data("quest.started")}]});
    let (status, problem) = problem(
        app.post_json("/v1/events/batch", &app.backend_token(), &fresh)
            .await,
    )
    .await;
    assert_eq!(status, 422, "an event never taken");
    assert_eq!(pointers(&problem), ["/events/0/deliverAt"]);
}

#[tokio::test]
async fn an_id_whose_scheduled_event_was_cancelled_is_refused_when_sent_again() {
    let app = spawn_app().await;
    let batch = json!({"events": [{"id": uuid::Uuid::new_v4(), "type": "quest.started",
        "deliverAt": in_(Duration::from_secs(600)), "data": valid_data("quest.started")}]});
    let token = app.backend_token();
    let first: Value = app
        .post_json("/v1/events/batch", &token, &batch)
        .await
        .json()
        .await
        .expect("receipt");
    let id = first["results"][0]["id"].as_str().unwrap();
    assert_eq!(cancel(&app, &token, id).await.status(), 204);
    let (status, problem) = problem(app.post_json("/v1/events/batch", &token, &batch).await).await;
    assert_eq!(status, 409);
    assert_eq!(problem["type"], "urn:problem:event-gateway:cancelled");
    assert_eq!(problem["results"][0]["status"], "failed");
    assert_eq!(state_of(&app, id).await["state"], "cancelled");
}
