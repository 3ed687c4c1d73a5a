//! The access table against the real router: every route, without credentials, as viewer, as
//! admin, and every state-changing one without its CSRF token.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use tower::ServiceExt as _;

use super::auth::Role;
use super::testing::{ADMIN, Cred, VIEWER, WebHarness};
use super::*;

/// A concrete path for a route pattern.
fn concrete(pattern: &str) -> String {
    pattern
        .replace("{name}", "nobody")
        .replace("{id}", "nothing")
        .replace("{section}", "log")
        .replace("{*path}", "app.js")
}

/// A request with the API's usual body: `{}` as JSON unless GET or DELETE.
async fn call(h: &WebHarness, method: &Method, path: &str, cred: &Cred) -> (StatusCode, String) {
    let (ct, body) = if *method == Method::GET || *method == Method::DELETE {
        (None, "")
    } else {
        (Some("application/json"), "{}")
    };
    let (code, bytes) = h.call(method.clone(), path, cred, ct, body).await;
    (code, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_is_guarded() {
    let h = WebHarness::new().await;
    let (admin_token, _) = h
        .state
        .auth
        .create_token("ci", Role::Admin, ADMIN)
        .expect("token");
    let none = Cred::default();
    let table = route_table();
    assert!(table.len() > 40, "the table has {} routes", table.len());
    for r in table {
        let path = concrete(r.path);
        let what = format!("{} {}", r.method, r.path);
        let unsafe_method = !is_safe(&r.method);

        let (anon, body) = call(&h, &r.method, &path, &none).await;
        match r.access {
            Access::Public => assert!(
                anon != StatusCode::UNAUTHORIZED && anon != StatusCode::FORBIDDEN,
                "{what} is public but answered {anon} without credentials: {body}"
            ),
            _ => assert_eq!(
                anon,
                StatusCode::UNAUTHORIZED,
                "{what} without credentials: {body}"
            ),
        }
        if r.access == Access::Public {
            continue;
        }

        let (viewer, body) = call(&h, &r.method, &path, &h.session(VIEWER)).await;
        match r.access {
            Access::Admin => {
                assert_eq!(viewer, StatusCode::FORBIDDEN, "{what} as viewer: {body}");
                assert!(body.contains("\"forbidden\""), "{what} as viewer: {body}");
            }
            _ => assert!(
                viewer != StatusCode::UNAUTHORIZED && viewer != StatusCode::FORBIDDEN,
                "{what} as viewer answered {viewer}: {body}"
            ),
        }

        let (admin, body) = call(&h, &r.method, &path, &h.session(ADMIN)).await;
        assert!(
            admin != StatusCode::UNAUTHORIZED
                && admin != StatusCode::FORBIDDEN
                && admin != StatusCode::METHOD_NOT_ALLOWED
                && !body.contains("nothing at"),
            "{what} as admin answered {admin}: {body}"
        );

        if unsafe_method {
            let mut no_csrf = h.session(ADMIN);
            no_csrf.csrf = None;
            let (c, body) = call(&h, &r.method, &path, &no_csrf).await;
            assert_eq!(c, StatusCode::FORBIDDEN, "{what} without CSRF: {body}");
            assert!(body.contains("\"csrf\""), "{what} without CSRF: {body}");
            let mut wrong = h.session(ADMIN);
            wrong.csrf = Some("forged".into());
            let (c, _) = call(&h, &r.method, &path, &wrong).await;
            assert_eq!(c, StatusCode::FORBIDDEN, "{what} with a wrong CSRF token");
            // A bearer token needs no CSRF token.
            let bearer = Cred {
                cookie: None,
                csrf: None,
                bearer: Some(admin_token.clone()),
            };
            let (c, body) = call(&h, &r.method, &path, &bearer).await;
            assert!(
                c != StatusCode::UNAUTHORIZED && c != StatusCode::FORBIDDEN,
                "{what} with an admin token answered {c}: {body}"
            );
        }
    }
    // A wrong token is refused even on a route a cookie would open.
    let bad = Cred {
        cookie: h.session(ADMIN).cookie,
        csrf: None,
        bearer: Some("ibt_nothing_wrong".into()),
    };
    let (c, _) = call(&h, &Method::GET, "/api/status", &bad).await;
    assert_eq!(c, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_origin_and_redirect() {
    let h = WebHarness::new().await;
    let st = &h.state;
    let resp = router(st.clone())
        .oneshot(
            Request::builder()
                .uri("/healthz")
                .body(Body::empty())
                .expect("req"),
        )
        .await
        .expect("resp");
    let h = resp.headers();
    assert_eq!(h["content-security-policy"], CSP);
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(h.contains_key("strict-transport-security"));

    // Login from another origin is refused before any password check.
    let resp = router(st.clone())
        .oneshot(
            Request::builder()
                .method(Method::POST)
                .uri("/api/login")
                .header(header::HOST, "gw.test")
                .header(header::ORIGIN, "https://evil.example")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"username":"a","password":"b"}"#))
                .expect("req"),
        )
        .await
        .expect("resp");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let resp = redirect_router(8443)
        .oneshot(
            Request::builder()
                .uri("/dashboard?x=1")
                .header(header::HOST, "box.plant:8080")
                .body(Body::empty())
                .expect("req"),
        )
        .await
        .expect("resp");
    assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        resp.headers()[header::LOCATION],
        "https://box.plant:8443/dashboard?x=1"
    );
    assert_eq!(host_without_port("[::1]:80"), "[::1]");
}

/// Found by the `web_api` fuzz target: a path parameter that is not UTF-8 once decoded was
/// axum's plain-text 400, not the API's JSON error.
#[tokio::test(flavor = "multi_thread")]
async fn bad_path_parameter_is_a_json_error() {
    let h = WebHarness::new().await;
    for (method, path) in [
        (Method::PUT, "/api/users/%C2%FB%7D"),
        (Method::GET, "/api/devices/%FF"),
        (Method::PUT, "/api/config/%FF"),
    ] {
        let (code, body) = h
            .request(method, path, Some("application/json"), "{}")
            .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{path}");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error");
        assert_eq!(v["error"], "bad_request", "{path}: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| m.contains("UTF-8")),
            "{v}"
        );
    }
}
