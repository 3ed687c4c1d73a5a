//! The web UI's static files (HTML shell, one stylesheet, small JavaScript modules), embedded in
//! the binary: no CDN, no web fonts, nothing read from disk at run time.
//!
//! Every page is the same HTML shell; `/assets/app.js` asks `/api/session`, then loads the page's
//! module (`/assets/<page>.js`). The pages follow the CSP `default-src 'self'; script-src 'self';
//! style-src 'self'` (no inline script, no style attributes) and render data with `textContent`.

/// The page routes (public static shells; the JavaScript redirects to `/login` or `/setup`).
pub const PAGES: &[&str] = &[
    "/",
    "/setup",
    "/login",
    "/dashboard",
    "/devices",
    "/mqtt",
    "/sparkplug",
    "/uplink",
    "/buffer",
    "/system",
    "/audit",
];

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

const SHELL: &[u8] = include_bytes!("assets/index.html");

/// `(path, content type, bytes)` of every file under `/assets/`.
const FILES: &[(&str, &str, &[u8])] = &[
    ("/assets/app.css", CSS, include_bytes!("assets/app.css")),
    ("/assets/app.js", JS, include_bytes!("assets/app.js")),
    ("/assets/common.js", JS, include_bytes!("assets/common.js")),
    ("/assets/chart.js", JS, include_bytes!("assets/chart.js")),
    ("/assets/logo.svg", SVG, include_bytes!("assets/logo.svg")),
    ("/assets/setup.js", JS, include_bytes!("assets/setup.js")),
    ("/assets/login.js", JS, include_bytes!("assets/login.js")),
    (
        "/assets/dashboard.js",
        JS,
        include_bytes!("assets/dashboard.js"),
    ),
    (
        "/assets/devices.js",
        JS,
        include_bytes!("assets/devices.js"),
    ),
    ("/assets/mqtt.js", JS, include_bytes!("assets/mqtt.js")),
    (
        "/assets/sparkplug.js",
        JS,
        include_bytes!("assets/sparkplug.js"),
    ),
    ("/assets/uplink.js", JS, include_bytes!("assets/uplink.js")),
    ("/assets/buffer.js", JS, include_bytes!("assets/buffer.js")),
    ("/assets/system.js", JS, include_bytes!("assets/system.js")),
    ("/assets/audit.js", JS, include_bytes!("assets/audit.js")),
];

/// The content type and bytes served at `path`: a page route (the HTML shell, also with a
/// trailing slash) or an `/assets/...` file. `None` for anything else.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let page = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    if PAGES.contains(&page) {
        return Some((HTML, SHELL));
    }
    FILES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, t, b)| (*t, *b))
}

/// Every `/assets/...` path.
pub fn asset_paths() -> impl Iterator<Item = &'static str> {
    FILES.iter().map(|(p, _, _)| *p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(path: &str) -> &'static str {
        let (_, b) = asset(path).unwrap_or_else(|| panic!("no asset {path}"));
        std::str::from_utf8(b).unwrap_or_else(|_| panic!("{path} is not UTF-8"))
    }

    #[test]
    fn every_page_is_the_html_shell() {
        for p in PAGES {
            let (t, b) = asset(p).unwrap_or_else(|| panic!("page {p} missing"));
            assert_eq!(t, HTML, "{p}");
            assert_eq!(b, SHELL, "{p}");
        }
        assert!(asset("/dashboard/").is_some());
        assert!(asset("/devices?d=x").is_some());
        assert!(asset("/nope").is_none());
        assert!(asset("/assets/nope.js").is_none());
        assert!(asset("/assets/../Cargo.toml").is_none());
    }

    #[test]
    fn every_page_has_its_module_and_the_app_knows_it() {
        let app = text("/assets/app.js");
        for p in PAGES.iter().filter(|p| **p != "/") {
            let name = &p[1..];
            let module = format!("/assets/{name}.js");
            assert!(asset(&module).is_some(), "{module} missing");
            assert!(
                app.contains(&format!("\"{p}\": \"{name}\"")),
                "app.js does not route {p}"
            );
        }
    }

    #[test]
    fn content_types() {
        for p in asset_paths() {
            let (t, b) = asset(p).expect("listed asset exists");
            assert!(!b.is_empty(), "{p} is empty");
            let want = match p.rsplit('.').next() {
                Some("css") => CSS,
                Some("js") => JS,
                Some("svg") => SVG,
                other => panic!("unexpected extension {other:?} of {p}"),
            };
            assert_eq!(t, want, "{p}");
        }
        let stylesheets = asset_paths().filter(|p| p.ends_with(".css")).count();
        assert_eq!(stylesheets, 1, "one stylesheet");
    }

    #[test]
    fn the_shell_loads_only_local_files() {
        let shell = std::str::from_utf8(SHELL).expect("utf-8");
        for r in ["/assets/app.css", "/assets/app.js", "/assets/logo.svg"] {
            assert!(shell.contains(r), "shell does not reference {r}");
            assert!(asset(r).is_some(), "{r} is referenced but missing");
        }
        assert!(!shell.contains("http://") && !shell.contains("https://"));
    }

    /// What the CSP forbids or what would turn data into markup must not appear.
    #[test]
    fn assets_are_csp_clean_and_never_use_html_sinks() {
        let shell = std::str::from_utf8(SHELL).expect("utf-8");
        assert!(!shell.contains("style="), "inline style in the shell");
        // The only <script> is the module with a src.
        assert_eq!(shell.matches("<script").count(), 1);
        assert!(shell.contains("<script type=\"module\" src=\"/assets/app.js\"></script>"));
        for p in asset_paths().filter(|p| p.ends_with(".js")) {
            // The SVG namespace is a name, not a fetch.
            let js = text(p).replace("\"http://www.w3.org/2000/svg\"", "");
            for bad in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                ".style.",
                "setAttribute(\"style\"",
                "http://",
                "https://",
            ] {
                assert!(!js.contains(bad), "{p} uses {bad}");
            }
            // Every module import is a local absolute path.
            for line in js.lines().filter(|l| l.contains(" from \"")) {
                assert!(line.contains("from \"/assets/"), "{p}: {line}");
            }
        }
        let css = text("/assets/app.css");
        assert!(
            !css.contains("@import") && !css.contains("url("),
            "external CSS resource"
        );
    }

    /// Every asset referenced by a dynamic or static import exists.
    #[test]
    fn imports_resolve() {
        for p in asset_paths().filter(|p| p.ends_with(".js")) {
            for part in text(p).split("\"/assets/").skip(1) {
                let Some(end) = part.find('"') else { continue };
                let name = &part[..end];
                if name.is_empty() || name.ends_with('/') {
                    continue; // `"/assets/" + name + ".js"` in the router
                }
                let path = format!("/assets/{name}");
                assert!(asset(&path).is_some(), "{p} references missing {path}");
            }
        }
    }

    #[test]
    fn small_enough_for_a_slow_link() {
        let total: usize = asset_paths()
            .map(|p| asset(p).map_or(0, |(_, b)| b.len()))
            .sum();
        assert!(total < 160 * 1024, "assets grew to {total} bytes");
    }
}
