//! What the `track` and `stats` examples share.

/// `[BASE_URL] [SITE_ID]` from the command line; defaults `$BEACON_URL` or
/// `http://localhost:1000`, and `site-001`.
pub fn target() -> (String, String) {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .or_else(|| std::env::var("BEACON_URL").ok())
        .unwrap_or_else(|| "http://localhost:1000".to_owned());
    let site = args.next().unwrap_or_else(|| "site-001".to_owned());
    (base, site)
}
