//! `hello`: the demo app. A small static file server on `[::]:$PORT` (default 8080) that
//! serves `$ROOT` (default `/public`), answers `/health`, and names the machine that
//! served each response (`X-Served-By`, from `FLY_MACHINE_ID`). Standard library only, so
//! `cargo xtask demo` links it statically and ships it `FROM scratch`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// The largest request head read (request line and headers).
const MAX_HEAD: usize = 16 * 1024;

fn main() -> std::io::Result<()> {
    let port: u16 = match std::env::var("PORT") {
        Ok(text) => text.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("PORT={text:?} is not a port number"),
            )
        })?,
        Err(_) => 8080,
    };
    let root = PathBuf::from(std::env::var("ROOT").unwrap_or_else(|_| "/public".to_owned()));
    let machine = std::env::var("FLY_MACHINE_ID").unwrap_or_else(|_| "local".to_owned());
    let listener = TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))?;
    tracing_line(&format!("serving {} on port {port}", root.display()));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (root, machine) = (root.clone(), machine.clone());
        std::thread::spawn(move || {
            let _ = serve(stream, &root, &machine);
        });
    }
    Ok(())
}

/// One log line on stdout (the platform keeps it).
#[allow(clippy::print_stdout, reason = "the app's log")]
fn tracing_line(text: &str) {
    println!("hello: {text}");
}

/// Serves one connection's requests (keep-alive) until the client closes it.
fn serve(stream: TcpStream, root: &Path, machine: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut head = Vec::new();
        loop {
            let read = reader
                .by_ref()
                .take(MAX_HEAD as u64)
                .read_until(b'\n', &mut head)?;
            if read == 0 {
                return Ok(());
            }
            if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
                break;
            }
            if head.len() >= MAX_HEAD {
                return respond(
                    &mut writer,
                    431,
                    "text/plain",
                    b"request head too large\n",
                    machine,
                    false,
                );
            }
        }
        let text = String::from_utf8_lossy(&head);
        let mut lines = text.lines();
        let request = lines.next().unwrap_or_default();
        let mut parts = request.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        let close = lines.any(|l| l.eq_ignore_ascii_case("connection: close"));
        let path = target.split(['?', '#']).next().unwrap_or("/");
        if method != "GET" && method != "HEAD" {
            respond(
                &mut writer,
                405,
                "text/plain",
                b"only GET and HEAD\n",
                machine,
                close,
            )?;
        } else if path == "/health" {
            respond(&mut writer, 200, "text/plain", b"ok\n", machine, close)?;
        } else {
            match file_for(root, path) {
                Some(file) => match std::fs::read(&file) {
                    Ok(body) => {
                        let body = if method == "HEAD" { Vec::new() } else { body };
                        respond(&mut writer, 200, content_type(&file), &body, machine, close)?;
                    }
                    Err(_) => respond(
                        &mut writer,
                        404,
                        "text/plain",
                        b"not found\n",
                        machine,
                        close,
                    )?,
                },
                None => respond(
                    &mut writer,
                    404,
                    "text/plain",
                    b"not found\n",
                    machine,
                    close,
                )?,
            }
        }
        if close {
            return Ok(());
        }
    }
}

/// The file a path names under `root` (`index.html` for a directory); `None` for paths
/// that leave it.
fn file_for(root: &Path, path: &str) -> Option<PathBuf> {
    let mut file = root.to_owned();
    for component in Path::new(path.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) => file.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if file.is_dir() {
        file.push("index.html");
    }
    Some(file)
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

fn respond(
    writer: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    machine: &str,
    close: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let connection = if close { "close" } else { "keep-alive" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nX-Served-By: {machine}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    );
    writer.write_all(head.as_bytes())?;
    writer.write_all(body)?;
    writer.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_root() {
        let root = Path::new("/public");
        assert_eq!(
            file_for(root, "/css/site.css"),
            Some(PathBuf::from("/public/css/site.css"))
        );
        assert_eq!(file_for(root, "/../etc/passwd"), None);
        assert_eq!(
            content_type(Path::new("a.html")),
            "text/html; charset=utf-8"
        );
    }
}
