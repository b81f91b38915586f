//! A real browser for the dashboard's tests: Debian's Chromium, headless, driven through
//! its ChromeDriver with WebDriver (fantoccini); axe-core checks each page's accessibility.
//! Both come from `cargo xtask test` (apt and npm); a missing one fails the test, naming
//! what to install.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Where `cargo xtask test` installs axe-core.
const AXE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../target/tools/node_modules/axe-core/axe.min.js"
);
/// Where a run saves its screenshots.
pub(crate) const SCREENSHOTS: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/screenshots");

/// Desktop and phone widths, for screenshots.
pub(crate) const DESKTOP: (u32, u32) = (1280, 900);
pub(crate) const PHONE: (u32, u32) = (390, 844);

pub(crate) struct Browser {
    pub(crate) client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts ChromeDriver on a free port and a headless Chromium session through it.
    pub(crate) async fn start() -> Browser {
        for tool in ["/usr/bin/chromedriver", "/usr/bin/chromium"] {
            assert!(
                std::path::Path::new(tool).exists(),
                "{tool} is missing: `cargo xtask test` installs Debian's chromium and chromium-driver"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                ],
            }),
        );
        let webdriver = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&webdriver)
                .await
            {
                Ok(client) => break client,
                Err(error) if started.elapsed() < Duration::from_secs(30) => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("no WebDriver session within 30 s: {error}"),
            }
        };
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Ends the browser session.
    pub(crate) async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    /// `script`'s value (a function body: `return ...`).
    pub(crate) async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Waits until `script` returns true, or fails after `deadline` saying `what`.
    pub(crate) async fn until(&self, what: &str, deadline: Duration, script: &str) {
        let started = Instant::now();
        loop {
            if self.eval(script).await == Value::Bool(true) {
                return;
            }
            assert!(
                started.elapsed() < deadline,
                "{what}: not within {deadline:?}; the page reads:\n{}",
                self.text().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The page's visible text.
    pub(crate) async fn text(&self) -> String {
        self.eval("return document.body ? document.body.innerText : ''")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Types `value` into the input `css` (cleared first).
    pub(crate) async fn fill(&self, css: &str, value: &str) {
        let input = self.client.find(Locator::Css(css)).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(value).await.unwrap();
    }

    /// Clicks `css` and waits for the next page to load.
    pub(crate) async fn click(&self, css: &str) {
        let before = self.eval("return performance.timeOrigin").await;
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let script = format!(
            "return performance.timeOrigin !== {before} && document.readyState === 'complete'"
        );
        self.until(
            &format!("the page after clicking {css}"),
            Duration::from_secs(30),
            &script,
        )
        .await;
    }

    /// Runs axe-core on the page: no serious or critical violation.
    pub(crate) async fn accessible(&self, page: &str) {
        let axe = std::fs::read_to_string(AXE).unwrap_or_else(|error| {
            panic!("{AXE}: {error}; `cargo xtask test` installs axe-core with npm")
        });
        self.client.execute(&axe, vec![]).await.unwrap();
        let result = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] })
                    .then(r => done(r.violations.map(v => ({ id: v.id, impact: v.impact,
                        help: v.help, nodes: v.nodes.map(n => n.html).slice(0, 3) }))))
                    .catch(e => done([{ id: 'axe-failed', impact: 'critical', help: String(e) }]));",
                vec![],
            )
            .await
            .unwrap();
        let serious: Vec<&Value> = result
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        assert!(
            serious.is_empty(),
            "axe-core on {page}: {}",
            serde_json::to_string_pretty(&serious).unwrap()
        );
    }

    /// Saves the page at desktop and phone widths as `NAME-desktop.png`, `NAME-phone.png`.
    pub(crate) async fn screenshots(&self, name: &str) {
        std::fs::create_dir_all(SCREENSHOTS).unwrap();
        for (width, (w, h)) in [("desktop", DESKTOP), ("phone", PHONE)] {
            self.client.set_window_size(w, h).await.unwrap();
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(format!("{SCREENSHOTS}/{name}-{width}.png"), png).unwrap();
        }
        self.client
            .set_window_size(DESKTOP.0, DESKTOP.1)
            .await
            .unwrap();
    }

    /// The session cookie's value, to ask the dashboard for things outside the browser.
    pub(crate) async fn session_cookie(&self) -> String {
        self.client
            .get_named_cookie("aloft_session")
            .await
            .unwrap()
            .value()
            .to_owned()
    }
}
