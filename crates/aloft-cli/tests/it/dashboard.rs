//! The web dashboard in a real browser (Chromium through ChromeDriver) against `aloftd
//! server` with Docker: sign in, watch a deploy started from the CLI, a log line arriving,
//! a restart, a secret, a rollback; another organization sees none of it; axe-core on
//! every page; screenshots at desktop and phone widths.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::browser::Browser;
use crate::platform::Platform;

const APP: &str = "dash";

/// What the dashboard streams at `path` in `within`, asked with the session `cookie`.
async fn streamed(url: &str, path: &str, cookie: &str, within: Duration) -> String {
    let response = aloft_testkit::http()
        .get(format!("{url}{path}"))
        .header("cookie", format!("aloft_session={cookie}"))
        .send()
        .await
        .unwrap();
    let mut response = response;
    let mut body = String::new();
    let _ = tokio::time::timeout(within, async {
        while let Ok(Some(chunk)) = response.chunk().await {
            body.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_follows_an_app_in_a_real_browser_and_shows_no_other_organization() {
    let image = aloft_testkit::testapp_image();
    // The apps' short history takes a step a second, not ten: the graphs fill quickly.
    let platform = Platform::start_with(|config| {
        config.api.history_step_seconds = 1;
        config.api.grafana_url = Some("http://grafana.test/".to_owned());
    })
    .await;
    let p = &platform;
    p.ok(&["auth", "login", "--token", &p.token, "--api-url", &p.url]);
    std::fs::write(
        p.home.path().join("fly.toml"),
        format!("app = \"{APP}\"\n\n[http_service]\n  internal_port = 8080\n"),
    )
    .unwrap();
    p.ok(&["apps", "create", APP]);
    p.ok(&[
        "deploy",
        "--image",
        &image,
        "-e",
        "RELEASE=one",
        "--smoke-checks=false",
    ]);

    let browser = Browser::start().await;
    let b = &browser;
    // A page asked for without a session sends the browser to sign in.
    b.client.goto(&format!("{}/apps", p.url)).await.unwrap();
    assert_eq!(b.client.current_url().await.unwrap().path(), "/sign-in");
    b.accessible("sign-in").await;
    b.screenshots("sign-in").await;
    b.fill("#token", "aloft_not_a_token").await;
    b.click("form button[type=submit]").await;
    assert!(
        b.text().await.contains("does not accept this token"),
        "{}",
        b.text().await
    );
    b.fill("#token", &p.token).await;
    b.click("form button[type=submit]").await;
    assert_eq!(b.client.current_url().await.unwrap().path(), "/apps");
    let apps = b.text().await;
    assert!(
        apps.contains(APP) && apps.contains("v1") && apps.contains("local: 2"),
        "the app, its release and its machines by region: {apps}"
    );
    b.accessible("apps").await;
    b.screenshots("apps").await;

    // A deploy started from the CLI: its steps change on the page, which never reloads.
    b.client
        .goto(&format!("{}/apps/{APP}", p.url))
        .await
        .unwrap();
    b.accessible("app").await;
    let services = b
        .eval("return document.querySelector('#services').textContent")
        .await;
    let services = services.as_str().unwrap_or_default();
    assert!(
        services.contains("8080") && services.contains("443 (tls, http)"),
        "the [http_service] as its ports: {services}"
    );
    // Each machine with the host it runs on (as `platform hosts` names it) and its release.
    let hosts: Value =
        serde_json::from_str(&p.ok(&["platform", "hosts", "--json"])).expect("hosts as JSON");
    let host = hosts["hosts"][0]["id"]
        .as_str()
        .expect("one host")
        .to_owned();
    let rows = b
        .eval("return [...document.querySelectorAll('#machines tr')].map(r => r.textContent)")
        .await;
    let rows: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in &rows {
        assert!(
            row.contains(&host[..8]) && row.contains("v1"),
            "a machine row names its host {host} and release v1: {row:?}"
        );
    }
    b.eval("window.aloftKept = true; return true").await;
    b.until(
        "the deployment's live view connects",
        Duration::from_secs(10),
        "return document.querySelector('#deployment-live').dataset.liveOpen === 'true'",
    )
    .await;
    let mut deploy = p
        .command(
            p.home.path(),
            // With its smoke check (3 s here) the deploy runs long enough to be watched.
            &["deploy", "--image", &image, "-e", "RELEASE=two"],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let started = Instant::now();
    loop {
        let now = b
            .eval(
                "const d = document.querySelector('#deployment-live');
                 return [d.textContent.includes('v2 '),
                         document.querySelectorAll('#deployment-steps li').length,
                         (document.querySelector('#deployment-status') || {}).textContent || ''];",
            )
            .await;
        if now[0] == Value::Bool(true) {
            seen.insert((
                now[1].as_u64().unwrap(),
                now[2].as_str().unwrap().to_owned(),
            ));
            if now[2] == "succeeded" {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "v2 did not succeed on the page; it reads:\n{}",
            b.text().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen.len() >= 2,
        "the steps changed while the page watched (steps and status seen: {seen:?})"
    );
    assert_eq!(
        b.eval("return window.aloftKept === true").await,
        Value::Bool(true),
        "the page was not reloaded"
    );
    let deployed = deploy.wait().unwrap();
    assert!(deployed.success());
    b.screenshots("app").await;

    // A line a machine writes shows on its page within 2 s.
    let machines: Value =
        serde_json::from_str(&p.ok(&["machine", "list", "-a", APP, "--json"])).unwrap();
    let id = machines[0]["id"].as_str().unwrap().to_owned();
    b.client
        .goto(&format!("{}/apps/{APP}/machines/{id}", p.url))
        .await
        .unwrap();
    b.until(
        "the machine's live logs connect",
        Duration::from_secs(10),
        "return document.querySelector('#machine-logs').dataset.liveOpen === 'true'",
    )
    .await;
    let mark = format!("dashboard-mark-{}", std::process::id());
    p.ok(&[
        "machine",
        "exec",
        &id,
        &format!("/aloft-testapp say {mark}"),
        "-a",
        APP,
    ]);
    b.until(
        "the new log line on the machine's page",
        Duration::from_secs(2),
        &format!("return document.querySelector('#machine-logs').textContent.includes('{mark}')"),
    )
    .await;
    b.accessible("machine").await;
    b.screenshots("machine").await;

    // Restart from the page: the machine comes back.
    let restarts_before = p
        .client
        .events(APP, &id)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == "restart")
        .count();
    b.click("#machine-restart").await;
    assert!(
        b.text().await.contains("Restart asked."),
        "{}",
        b.text().await
    );
    let started = Instant::now();
    loop {
        let events = p.client.events(APP, &id).await.unwrap();
        let restarts = events.iter().filter(|e| e.kind == "restart").count();
        let machine = p.client.machine(APP, &id).await.unwrap();
        if restarts > restarts_before && machine.state == "started" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the machine did not restart: {:?}",
            events
                .iter()
                .map(|e| (&e.kind, &e.status))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.until(
        "the page shows the machine started again",
        Duration::from_secs(10),
        "return document.querySelector('#machine-state').textContent === 'started'
            && document.querySelector('#machine-events').textContent.includes('restart')",
    )
    .await;

    // A secret set on the page: its name and digest show, its value never again.
    b.client
        .goto(&format!("{}/apps/{APP}", p.url))
        .await
        .unwrap();
    let value = format!("s3cret-{}", std::process::id());
    b.fill("#secret-name", "DASH_SECRET").await;
    b.fill("#secret-value", &value).await;
    b.click("#secrets form.row button[type=submit]").await;
    let source = b.client.source().await.unwrap();
    assert!(source.contains("DASH_SECRET") && source.contains("Secret set."));
    assert!(!source.contains(&value), "the value is never shown");
    let listed = p.ok(&["secrets", "list", "-a", APP]);
    assert!(listed.contains("DASH_SECRET"), "{listed}");

    // Roll back to v1 from the page: a new release with v1's config goes live.
    b.click("form[action$='/releases/1/rollback'] button").await;
    assert!(
        b.text().await.contains("Rollback started"),
        "{}",
        b.text().await
    );
    b.until(
        "the rollback succeeds on the page",
        Duration::from_secs(90),
        "return document.querySelector('#deployment-live').textContent.includes('v3 ')
            && (document.querySelector('#deployment-status') || {}).textContent === 'succeeded'",
    )
    .await;
    for machine in p.client.list_machines(APP).await.unwrap() {
        assert_eq!(
            machine.config.env.get("RELEASE").map(String::as_str),
            Some("one"),
            "machine {} runs v1's config again",
            machine.id
        );
    }

    // Scaled from the page: three machines of the group, then one; the table follows.
    let live = || async {
        p.client
            .list_machines(APP)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| !matches!(m.state.as_str(), "destroyed" | "destroying"))
            .collect::<Vec<_>>()
    };
    b.client
        .goto(&format!("{}/apps/{APP}", p.url))
        .await
        .unwrap();
    b.fill("#scale-app", "3").await;
    b.click("#scale-app-submit").await;
    assert!(b.text().await.contains("Scaled"), "{}", b.text().await);
    b.until(
        "three started machines in the table",
        Duration::from_secs(60),
        "const rows = document.querySelectorAll('#machines tr');
         return rows.length === 3 && [...rows].every(r => r.textContent.includes('started'));",
    )
    .await;
    assert_eq!(live().await.len(), 3);
    b.fill("#scale-app", "1").await;
    b.click("#scale-app-submit").await;
    b.until(
        "one machine in the table",
        Duration::from_secs(60),
        "return document.querySelectorAll('#machines tr').length === 1",
    )
    .await;
    assert_eq!(live().await.len(), 1);
    let id = live().await[0].id.clone();

    // Requests through the edge show in the graphs, with the machine's memory.
    let http: std::net::SocketAddr =
        std::fs::read_to_string(p.data.path().join(aloftd::HTTP_ADDR_FILE))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    let edge = aloft_testkit::http();
    for _ in 0..20 {
        let answer = edge
            .get(format!("http://{http}/"))
            .header("host", format!("{APP}.aloft.localhost"))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{}", answer.status());
    }
    // The history counts them within a few steps (a step a second here)...
    let started = Instant::now();
    loop {
        let history = p
            .client
            .metrics_history(APP, aloft_types::history::HistoryRange::Hour)
            .await
            .unwrap();
        #[allow(clippy::cast_precision_loss, reason = "a step's seconds")]
        let answered: f64 = history
            .points
            .iter()
            .map(|point| point.requests_per_second["2xx"] * history.step_seconds as f64)
            .sum();
        let memory = history
            .points
            .iter()
            .any(|point| point.machines.iter().any(|m| m.memory_mb > 0.0));
        if answered >= 15.0 && memory {
            assert!(
                answered <= 25.0,
                "the 20 requests in the history (counted {answered})"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the 20 requests and the machine's memory in the history: {answered} requests, memory {memory}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // ...and the page draws them: the 2xx line peaks at a rate, memory has a value.
    b.client
        .goto(&format!("{}/apps/{APP}/metrics", p.url))
        .await
        .unwrap();
    let shown = b
        .eval(
            "const first = sel => (document.querySelector(sel) || {}).textContent || 'none';
             return [parseFloat(first('#chart-requests .legend .peak')),
                     first('#chart-memory .legend .latest'),
                     document.querySelectorAll('#chart-requests path.line').length];",
        )
        .await;
    assert!(
        shown[0].as_f64().is_some_and(|peak| peak >= 1.0)
            && shown[1] != "none"
            && shown[2].as_u64() > Some(0),
        "the graphs: {shown}\n{}",
        b.text().await
    );
    // The operator's Grafana (`[api] grafana_url`): the app's dashboard there.
    let grafana = b
        .eval("return (document.querySelector('#grafana') || {}).href || 'none'")
        .await;
    assert_eq!(
        grafana, "http://grafana.test/d/aloft-app/aloft-app?var-app=dash",
        "{grafana}"
    );
    b.accessible("metrics").await;
    b.screenshots("metrics").await;

    // The logs page finds the line by its text.
    b.client
        .goto(&format!("{}/apps/{APP}/logs?text={mark}", p.url))
        .await
        .unwrap();
    assert_eq!(
        b.eval("return document.querySelectorAll('#log-lines li').length")
            .await,
        Value::from(1),
        "{}",
        b.text().await
    );
    b.accessible("logs").await;
    b.screenshots("logs").await;
    b.client.goto(&format!("{}/platform", p.url)).await.unwrap();
    assert!(b.text().await.contains("Hosts"));
    b.accessible("platform").await;
    b.screenshots("platform").await;

    // Another organization's token sees none of it. The owner's session streams the
    // app's machines (the control); the other's gets nothing of them.
    let owner = b.session_cookie().await;
    let machines_path = format!("/apps/{APP}/live/machines");
    let shown = streamed(&p.url, &machines_path, &owner, Duration::from_secs(2)).await;
    assert!(shown.contains(&id), "the owner's stream: {shown}");
    // The page reads without JavaScript: its first HTML has the machines and the steps.
    let first_html = aloft_testkit::http()
        .get(format!("{}/apps/{APP}", p.url))
        .header("cookie", format!("aloft_session={owner}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        first_html.contains(&id) && first_html.contains("id=\"deployment-steps\""),
        "{first_html}"
    );
    let other_token = p.ok(&["orgs", "create", "globex"]).trim().to_owned();
    // Another organization joins the session; the switcher shows it.
    b.client.goto(&format!("{}/sign-in", p.url)).await.unwrap();
    assert!(
        b.text().await.contains("Add an organization"),
        "{}",
        b.text().await
    );
    b.fill("#token", &other_token).await;
    b.click("main form button[type=submit]").await;
    let apps = b.text().await;
    assert!(
        apps.contains("No apps yet") && !apps.contains(APP),
        "{apps}"
    );
    for path in [
        format!("/apps/{APP}"),
        format!("/apps/{APP}/machines/{id}"),
        format!("/apps/{APP}/logs?text={mark}"),
    ] {
        b.client.goto(&format!("{}{path}", p.url)).await.unwrap();
        let page = b.text().await;
        assert!(
            page.contains("Not found") && !page.contains(&id) && !page.contains(&mark),
            "{path} for another organization: {page}"
        );
    }
    let other = b.session_cookie().await;
    let shown = streamed(&p.url, &machines_path, &other, Duration::from_secs(2)).await;
    assert!(
        !shown.contains(&id),
        "another organization's stream: {shown}"
    );
    // Back to the first organization with the switcher, then signed out of both.
    b.client.goto(&format!("{}/apps", p.url)).await.unwrap();
    b.client
        .find(fantoccini::Locator::Css("#org-switch"))
        .await
        .unwrap()
        .select_by_value("personal")
        .await
        .unwrap();
    b.click("form[action='/switch'] button").await;
    assert!(b.text().await.contains(APP), "{}", b.text().await);
    b.accessible("apps, with the organization switcher").await;
    b.click("form[action='/sign-out'] button").await;
    b.client.goto(&format!("{}/apps", p.url)).await.unwrap();
    assert_eq!(b.client.current_url().await.unwrap().path(), "/sign-in");
    // A form posted from another site is refused before it does anything.
    let forged = aloft_testkit::http()
        .post(format!("{}/apps/{APP}/secrets", p.url))
        .header("cookie", format!("aloft_session={owner}"))
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=FORGED&value=x&csrf=")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let forged = aloft_testkit::http()
        .post(format!("{}/apps/{APP}/secrets", p.url))
        .header("cookie", format!("aloft_session={owner}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=FORGED&value=x&csrf=wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403, "a wrong CSRF token");
    assert!(!p.ok(&["secrets", "list", "-a", APP]).contains("FORGED"));
    browser.close().await;
}
