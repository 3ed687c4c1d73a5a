//! The web port: `/metrics`, `/healthz` and `/api/status` (the UI joins them later).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;

use crate::status::GatewayStatus;

pub fn router(status: GatewayStatus) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/status", get(api_status))
        .with_state(status)
}

async fn metrics(State(s): State<GatewayStatus>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics(),
    )
}

/// 200 while the pipeline works (the uplink being offline is buffering, not a failure);
/// 503 when the buffer failed or a component keeps restarting.
async fn healthz(State(s): State<GatewayStatus>) -> impl IntoResponse {
    let r = s.report();
    let code = if r.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(serde_json::json!({
            "status": if r.healthy { "ok" } else { "failing" },
            "problems": r.problems,
            "uplink": r.uplink.state,
            "backlog_records": r.buffer.records,
        })),
    )
}

async fn api_status(State(s): State<GatewayStatus>) -> impl IntoResponse {
    Json(s.report())
}
