//! `[[statics]]` end to end: the edge answers files of a running machine under a
//! mapping's URL prefix without asking the app, and hands everything else (a missing
//! file, a directory, a symbolic link, a path that climbs out, a POST) to the app.

use std::time::Duration;

use aloft_testkit::{BUSYBOX_IMAGE, eventually};
use aloft_types::machine::{MachineConfig, MachineInit, Static};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::proxy::{ECHO, get, proxy_address, service, start};
use crate::{Host, Server};

const HOST: &str = "files.aloft.localhost";

/// The echo app, with files, a directory and links under `/public`, mapped at
/// `/static/`.
fn config() -> MachineConfig {
    let setup = "mkdir -p /public/css /srv \
        && printf hello > /public/hello.txt \
        && printf 'body{}' > /public/css/app.css \
        && ln -sf /etc/passwd /public/passwd \
        && ln -sf ../etc/group /public/group \
        && printf '%s' \"$ECHO_SCRIPT\" > /srv/echo && chmod +x /srv/echo \
        && exec nc -ll -p 8080 -e /srv/echo";
    let mut config = MachineConfig {
        image: BUSYBOX_IMAGE.to_owned(),
        init: MachineInit {
            cmd: vec!["sh".into(), "-c".into(), setup.into()],
            ..MachineInit::default()
        },
        services: vec![service(false)],
        statics: vec![Static {
            guest_path: "/public".to_owned(),
            url_prefix: "/static/".to_owned(),
            tigris_bucket: String::new(),
            index_document: String::new(),
        }],
        ..MachineConfig::default()
    };
    config.env.insert("ECHO_SCRIPT".into(), ECHO.into());
    config
}

/// A request sent byte for byte (no client normalizes its path): the response's text.
async fn raw(proxy: std::net::SocketAddr, request_line: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let request = format!("{request_line}\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn statics_serve_a_machines_files_and_leave_the_rest_to_the_app() {
    let host = Host::new();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("files", None).await.unwrap();
    let machine = start(client, "files", config()).await;
    let proxy = proxy_address(&host);
    let http = aloft_testkit::http();
    let from_app = format!("machine={}", machine.id);
    // The app answers first (the route is up), which the files are then told apart from.
    eventually("the app to be routed", Duration::from_secs(30), || async {
        let body = get(&http, proxy, HOST, "/").await.text().await.ok()?;
        body.starts_with(&from_app).then_some(())
    })
    .await;

    let hello = get(&http, proxy, HOST, "/static/hello.txt").await;
    assert_eq!(hello.status(), 200);
    assert_eq!(hello.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(hello.headers()["content-length"], "5");
    assert_eq!(hello.headers()["server"], "Aloft/1");
    assert_eq!(hello.text().await.unwrap(), "hello");
    let css = get(&http, proxy, HOST, "/static/css/app.css").await;
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert_eq!(css.text().await.unwrap(), "body{}");
    let head = http
        .head(format!("http://{proxy}/static/hello.txt"))
        .header("host", HOST)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "5");

    // Everything else is the app's: a missing file, a directory, links (absolute and
    // relative) and other methods.
    for path in [
        "/static/missing.txt",
        "/static/css",
        "/static/css/",
        "/static/passwd",
        "/static/group",
        "/static",
    ] {
        let body = get(&http, proxy, HOST, path).await.text().await.unwrap();
        assert!(body.starts_with(&from_app), "{path}: {body}");
    }
    let posted = http
        .post(format!("http://{proxy}/static/hello.txt"))
        .header("host", HOST)
        .body("x")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(posted.starts_with(&from_app), "{posted}");

    // Paths that climb out of the mapping, sent as they are: the raw request for a file
    // is served (the probe works), the climbing ones go to the app.
    let served = raw(proxy, "GET /static/hello.txt HTTP/1.1").await;
    assert!(served.ends_with("\r\n\r\nhello"), "{served}");
    for climbing in [
        "GET /static/../../etc/passwd HTTP/1.1",
        "GET /static/%2e%2e/%2e%2e/etc/passwd HTTP/1.1",
        "GET /static/css/..%2f..%2fetc/passwd HTTP/1.1",
    ] {
        let answer = raw(proxy, climbing).await;
        assert!(!answer.contains("root:"), "{climbing}: {answer}");
        assert!(answer.contains(&from_app), "{climbing}: {answer}");
    }

    // Restarted, the machine runs as another process: its files are served from it (the
    // agent's remembered process of the old run is not used).
    client.restart_machine("files", &machine.id).await.unwrap();
    client
        .wait("files", &machine.id, aloft_types::MachineState::Started, 60)
        .await
        .unwrap();
    eventually(
        "the restarted machine's file",
        Duration::from_secs(30),
        || async {
            let body = get(&http, proxy, HOST, "/static/hello.txt")
                .await
                .text()
                .await
                .ok()?;
            (body == "hello").then_some(())
        },
    )
    .await;
}
