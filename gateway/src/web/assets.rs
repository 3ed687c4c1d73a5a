//! PLACEHOLDER owned by the web-ui branch, which replaces this file wholesale (on merge, take
//! web-ui's version). The interface web-core's router relies on:
//!
//! `asset(path)` gets the request path: a page (`/`, `/dashboard`, … see `super::PAGES`) or an
//! asset (`/assets/...`), and returns its content type and bytes, or `None` (404).

const SHELL: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Ironbridge</title></head>\n<body><h1>Ironbridge</h1><p>The web UI is not built into this binary; the JSON API is under /api/.</p></body></html>\n";

pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    if super::PAGES.contains(&path) {
        return Some(("text/html; charset=utf-8", SHELL.as_bytes()));
    }
    None
}
