//! Input that PostgreSQL would refuse is the client's error: a 4xx naming the field,
//! before any query, and never a failure of the database in its circuit breaker.

use event_gateway::store::StoreError;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn the_store_tells_values_it_refuses_from_a_database_in_trouble() {
    let app = spawn_app().await;
    let pool = app.db().await;
    let nul_text = sqlx::query("SELECT $1::text")
        .bind("a\0b")
        .execute(&pool)
        .await
        .unwrap_err();
    let nul_json = sqlx::query("SELECT $1::jsonb")
        .bind(sqlx::types::Json(json!({"note": "a\u{0}b"})))
        .execute(&pool)
        .await
        .unwrap_err();
    for refused in [nul_text, nul_json] {
        let error = StoreError::from(refused);
        assert!(matches!(error, StoreError::Refused(_)), "{error}");
    }
    let mut connection = pool.acquire().await.unwrap();
    sqlx::query("SET statement_timeout = 10")
        .execute(&mut *connection)
        .await
        .unwrap();
    let timed_out = sqlx::query("SELECT pg_sleep(1)")
        .execute(&mut *connection)
        .await
        .unwrap_err();
    let error = StoreError::from(timed_out);
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
}
