//! The access table against the real router: every route, without credentials, as viewer, as
//! admin, and every state-changing one without its CSRF token.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use tower::ServiceExt as _;

use super::auth::Role;
use super::testing::{ADMIN, Cred, OPERATOR, VIEWER, WebHarness};
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

        for (user, role) in [(VIEWER, Role::Viewer), (OPERATOR, Role::Operator)] {
            let (code, body) = call(&h, &r.method, &path, &h.session(user)).await;
            let needed = match r.access {
                Access::Admin => Role::Admin,
                Access::Operator => Role::Operator,
                _ => Role::Viewer,
            };
            if role.includes(needed) {
                assert!(
                    code != StatusCode::UNAUTHORIZED && code != StatusCode::FORBIDDEN,
                    "{what} as {role:?} answered {code}: {body}"
                );
            } else {
                assert_eq!(code, StatusCode::FORBIDDEN, "{what} as {role:?}: {body}");
                assert!(body.contains("\"forbidden\""), "{what} as {role:?}: {body}");
            }
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

/// The MQTT page's Save of the topic rules: `PUT /api/config/mqtt` with the section as read
/// (secrets `"********"`) and new `acl`/`client_id_prefix_user`. The rules come back in order,
/// land in the file as `[[mqtt.acl]]` tables, and an invalid rule is a 422 naming its field.
#[tokio::test(flavor = "multi_thread")]
async fn mqtt_section_with_topic_rules_round_trips() {
    use serde_json::{Value, json};

    let h = WebHarness::new().await;
    let h = &h;
    let get = move || async move {
        let (code, body) = h.request(Method::GET, "/api/config/mqtt", None, "").await;
        assert_eq!(code, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<Value>(&body).expect("mqtt section")
    };
    let put = move |v: Value| async move {
        let (code, body) = h
            .request(
                Method::PUT,
                "/api/config/mqtt",
                Some("application/json"),
                v.to_string(),
            )
            .await;
        let v: Value = serde_json::from_slice(&body).expect("JSON answer");
        (code, v)
    };

    let mut mqtt = get().await;
    assert_eq!(mqtt["acl"], json!([]), "{mqtt}");
    assert_eq!(mqtt["client_id_prefix_user"], json!(false), "{mqtt}");
    // A new account (a plain password, hashed by the API) and two rules.
    mqtt["users"] = json!({ "scada": "scada-password-1" });
    let rules = json!([
        { "users": ["scada"], "action": "publish", "permission": "allow",
          "topics": ["spBv1.0/+/DCMD/#", "spBv1.0/+/NCMD/#"] },
        { "users": ["*", "$anonymous"], "action": "all", "permission": "deny",
          "topics": ["$SYS/#", "plant/%u/#"] },
    ]);
    mqtt["acl"] = rules.clone();
    mqtt["client_id_prefix_user"] = json!(true);
    let (code, res) = put(mqtt).await;
    assert_eq!(code, StatusCode::OK, "{res}");
    assert_eq!(res["restart_required"], json!(true), "{res}");

    let read = get().await;
    assert_eq!(read["acl"], rules, "rules in order, as sent");
    assert_eq!(read["client_id_prefix_user"], json!(true));
    assert_eq!(read["users"]["scada"], json!("********"));
    let text = std::fs::read_to_string(h.config_path()).expect("config file");
    assert_eq!(text.matches("[[mqtt.acl]]").count(), 2, "{text}");
    let file: toml::Table = toml::from_str(&text).expect("the file parses");
    assert_eq!(
        file["mqtt"]["acl"][0]["topics"][0].as_str(),
        Some("spBv1.0/+/DCMD/#"),
        "{text}"
    );
    assert_eq!(
        file["mqtt"]["acl"][1]["permission"].as_str(),
        Some("deny"),
        "{text}"
    );
    let hash = file["mqtt"]["users"]["scada"]
        .as_str()
        .expect("hash")
        .to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");

    // The same section as the UI sends it back (hash redacted), one filter invalid.
    let mut bad = read.clone();
    bad["acl"][0]["topics"][1] = json!("a/#/b");
    let (code, res) = put(bad).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{res}");
    assert_eq!(res["error"], "invalid", "{res}");
    let fields: Vec<&str> = res["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert_eq!(fields, ["mqtt.acl[0].topics[1]"], "{res}");

    // A value outside the schema names the field too.
    let mut bad = read.clone();
    bad["acl"][1]["action"] = json!("write");
    let (code, res) = put(bad).await;
    assert!(code.is_client_error(), "{code} {res}");
    assert_eq!(res["fields"][0]["field"], "mqtt.acl[1].action", "{res}");
    let mut bad = read.clone();
    bad["acl"][1]["users"] = json!([]);
    let (code, res) = put(bad).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{res}");
    assert_eq!(res["fields"][0]["field"], "mqtt.acl[1].users", "{res}");

    // Nothing of the refused saves reached the file; the stored hash survived the round trip.
    assert_eq!(get().await, read);
    let after = std::fs::read_to_string(h.config_path()).expect("config file");
    assert_eq!(after, text);

    // Saving the section as read keeps everything, and an empty list removes the rules.
    let mut none = read.clone();
    none["acl"] = json!([]);
    none["client_id_prefix_user"] = json!(false);
    let (code, res) = put(none).await;
    assert_eq!(code, StatusCode::OK, "{res}");
    let text = std::fs::read_to_string(h.config_path()).expect("config file");
    assert!(!text.contains("[[mqtt.acl]]"), "{text}");
    assert!(text.contains(&hash), "the account's hash is kept: {text}");
    assert_eq!(get().await["acl"], json!([]));
}
