//! Headless Chromium over WebDriver (`chromedriver`), for tests that drive real pages.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use serde_json::json;

/// A user agent of a person's Chrome: headless Chromium's own says `HeadlessChrome`,
/// which Beacon leaves out as a bot.
pub const DESKTOP_CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

/// `chromedriver` (or `CHROMEDRIVER`), or why a browser test cannot run.
pub fn chromedriver() -> Result<PathBuf, String> {
    std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|dir| dir.join("chromedriver"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            "chromedriver not found (Debian: apt-get install chromium chromium-driver)".to_owned()
        })
}

/// What a browser test does when it cannot run: fails under `BEACON_REQUIRE_BROWSER=1`
/// (as `scripts/test` sets), else says SKIPPED loudly. Returns whether to go on.
pub fn may_run(prerequisites: Result<(), String>) -> bool {
    match prerequisites {
        Ok(()) => true,
        Err(why) if std::env::var("BEACON_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!("browser test cannot run: {why}")
        }
        Err(why) => {
            eprintln!("\n!!!!!!!! SKIPPED: browser test: {why} !!!!!!!!\n");
            false
        }
    }
}

/// Starts `driver` on a free port; the child dies with its handle.
pub async fn start_chromedriver(driver: &Path) -> (tokio::process::Child, String) {
    let port = crate::free_port();
    let child = tokio::process::Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, format!("http://127.0.0.1:{port}"))
}

/// Headless Chromium at `width`×`height`, under [`DESKTOP_CHROME`]'s user agent.
pub async fn browser(webdriver: &str, width: u32, height: u32) -> Client {
    let mut caps = serde_json::Map::new();
    let mut chrome = json!({ "args": [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-dev-shm-usage", format!("--window-size={width},{height}"),
        format!("--user-agent={DESKTOP_CHROME}"),
    ]});
    if Path::new("/usr/bin/chromium").is_file() {
        chrome["binary"] = json!("/usr/bin/chromium");
    }
    caps.insert("goog:chromeOptions".into(), chrome);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(webdriver)
        .await
        .expect("a WebDriver session")
}

/// Waits for the snippet on the current page to load: true if the visit is tracked
/// (`window.beacon.ready`).
pub async fn snippet_ready(browser: &Client) -> bool {
    let tracked = browser
        .execute_async(
            "const done = arguments[arguments.length - 1]; window.beacon.ready.then(done);",
            vec![],
        )
        .await
        .expect("window.beacon.ready");
    tracked == json!(true)
}

/// Loads `url` in `runs` fresh browsers (nothing cached) and, in each, polls `script`
/// until it returns a number of milliseconds (or a string holding one). Prints each run
/// as `run N: {what} in M ms` and returns the sorted times.
pub async fn time_in_fresh_browsers(url: &str, runs: usize, script: &str, what: &str) -> Vec<u64> {
    let driver = chromedriver().unwrap_or_else(|why| panic!("{why}"));
    let (_driver, webdriver) = start_chromedriver(&driver).await;
    let mut times = Vec::new();
    for run in 1..=runs {
        let client = browser(&webdriver, 1280, 800).await;
        client.goto(url).await.expect("the page loads");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let ms = loop {
            let value = client
                .execute(script, vec![])
                .await
                .expect("the script runs");
            let ms = value
                .as_u64()
                .or_else(|| value.as_str().and_then(|v| v.parse().ok()));
            if let Some(ms) = ms {
                break ms;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: never measured"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        println!("run {run}: {what} in {ms} ms");
        times.push(ms);
        let _ = client.close().await;
    }
    times.sort_unstable();
    times
}
