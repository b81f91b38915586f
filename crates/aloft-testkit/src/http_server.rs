//! A small real HTTP server for network tests: Python's `http.server` on `[::]:PORT`
//! (every address of its namespace, both families), serving a directory.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TestNetns;

/// `python3 -m http.server PORT --bind ::` in a test's network namespace (this host's own
/// with `None`), serving a directory; killed when dropped.
#[derive(Debug)]
pub struct HttpServer {
    process: Child,
    /// The served directory when the server made it (removed after the server).
    _site: Option<tempfile::TempDir>,
}

impl HttpServer {
    /// Serves `hello.txt` holding `body`; returns once `/hello.txt` answers on
    /// `127.0.0.1:port` in the server's namespace (up to 20 s).
    pub fn hello(netns: Option<&TestNetns>, port: u16, body: &str) -> HttpServer {
        let site = tempfile::tempdir().expect("a directory to serve");
        std::fs::write(site.path().join("hello.txt"), body).expect("writing hello.txt");
        let mut server = HttpServer::serve(netns, port, site.path());
        server._site = Some(site);
        server
    }

    /// Serves `dir`; returns once `/` answers on `127.0.0.1:port` in the server's
    /// namespace (up to 20 s).
    pub fn serve(netns: Option<&TestNetns>, port: u16, dir: &Path) -> HttpServer {
        let in_namespace = |program: &str| match netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns.name(), program]);
                command
            }
            None => Command::new(program),
        };
        let process = in_namespace("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "::"])
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let server = HttpServer {
            process,
            _site: None,
        };
        let url = format!("http://127.0.0.1:{port}/");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !in_namespace("curl")
            .args(["-sf", "-m", "2", "-o", "/dev/null", &url])
            .status()
            .is_ok_and(|status| status.success())
        {
            assert!(Instant::now() < deadline, "{url} did not start answering");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
