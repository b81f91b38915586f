//! `[[statics]]`: requests under a mapping's `url_prefix` for a file that exists under
//! its `guest_path` in the chosen machine are answered with that file, without the app;
//! anything else (no such file, a directory, a link) goes to the app as usual. As on Fly,
//! only a started machine serves (autostart applies), and symbolic links are not
//! followed. The files are the host's to open: the proxy asks through [`Statics`].

use aloft_types::machine::Static;

use crate::autoscale::BoxFuture;

/// A file of a machine, opened for a response.
pub struct StaticFile {
    pub length: u64,
    pub body: Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>,
}

impl std::fmt::Debug for StaticFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticFile")
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

/// How the proxy opens machines' files (the control plane and the host's agent, in
/// `aloftd`).
pub trait Statics: Send + Sync + std::fmt::Debug {
    /// Opens `path` (relative, segments checked) under `guest_path` in `machine`: `None`
    /// when there is no regular file to serve there.
    fn open(
        &self,
        machine: String,
        guest_path: String,
        path: String,
    ) -> BoxFuture<Result<Option<StaticFile>, Box<dyn std::error::Error + Send + Sync>>>;
}

/// The mapping that the request path `path` (as sent, percent-encoded) falls under and
/// the file's path beneath its `guest_path`, decoded; `None` when none matches or the
/// rest of the path has a segment that is empty, `.`, `..`, or decodes to one with `/`,
/// a NUL or invalid UTF-8.
pub(crate) fn file_for<'s>(statics: &'s [Static], path: &str) -> Option<(&'s Static, String)> {
    let (mapping, rest) = statics.iter().find_map(|mapping| {
        let prefix = mapping.url_prefix.trim_end_matches('/');
        let rest = path.strip_prefix(prefix)?.strip_prefix('/')?;
        Some((mapping, rest))
    })?;
    let mut segments = Vec::new();
    for segment in rest.split('/') {
        let decoded = percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .ok()?;
        if decoded.is_empty() || decoded == "." || decoded == ".." || decoded.contains(['/', '\0'])
        {
            return None;
        }
        segments.push(decoded.into_owned());
    }
    Some((mapping, segments.join("/")))
}

/// The `Content-Type` of a file by its extension (the common web types; others are
/// bytes).
pub(crate) fn content_type(path: &str) -> &'static str {
    let extension = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "csv" => "text/csv; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(url_prefix: &str, guest_path: &str) -> Static {
        Static {
            guest_path: guest_path.to_owned(),
            url_prefix: url_prefix.to_owned(),
            tigris_bucket: String::new(),
            index_document: String::new(),
        }
    }

    #[test]
    fn paths_under_a_prefix_map_to_files_beneath_its_guest_path() {
        let statics = [
            mapping("/static/", "/app/public"),
            mapping("/assets", "/app/assets"),
        ];
        let found = |path| file_for(&statics, path).map(|(m, p)| (m.guest_path.clone(), p));
        assert_eq!(
            found("/static/css/app.css"),
            Some(("/app/public".to_owned(), "css/app.css".to_owned()))
        );
        assert_eq!(
            found("/assets/logo%20big.png"),
            Some(("/app/assets".to_owned(), "logo big.png".to_owned()))
        );
        // Only whole segments match the prefix.
        assert_eq!(found("/assetsx/logo.png"), None);
        assert_eq!(found("/static"), None);
        assert_eq!(found("/static/"), None);
        assert_eq!(found("/other/x"), None);
        for escaping in [
            "/static/../etc/passwd",
            "/static/%2e%2e/etc/passwd",
            "/static/a/%2E%2E/b",
            "/static/./x",
            "/static/a//b",
            "/static/a%2fb",
            "/static/a%00b",
            "/static/%ff",
            "/static/css/",
        ] {
            assert_eq!(found(escaping), None, "{escaping}");
        }
    }

    #[test]
    fn a_root_prefix_takes_every_path() {
        let statics = [mapping("/", "/srv")];
        assert_eq!(
            file_for(&statics, "/index.html").map(|(_, p)| p),
            Some("index.html".to_owned())
        );
        assert_eq!(file_for(&statics, "/"), None);
    }

    #[test]
    fn content_types_follow_extensions() {
        assert_eq!(content_type("a/b/app.CSS"), "text/css; charset=utf-8");
        assert_eq!(content_type("logo.svg"), "image/svg+xml");
        assert_eq!(content_type("Makefile"), "application/octet-stream");
    }
}
