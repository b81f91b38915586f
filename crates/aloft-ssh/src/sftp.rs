//! The SFTP server of `aloft ssh sftp`: SFTP version 3 over a process's stdin and stdout,
//! on the filesystem of the process's root.
//!
//! The agent runs it as a helper process (`aloftd sftp-server --root /proc/<pid>/root`)
//! that first changes its root to the machine's ([`enter_root`]): paths, `..` and symbolic
//! links then resolve inside the machine, mounted volumes included, never on the host.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Changes this process's root to `root` (a machine's `/proc/<pid>/root`) and its working
/// directory to the new `/`. Call before any other thread starts.
pub fn enter_root(root: &Path) -> std::io::Result<()> {
    std::os::unix::fs::chroot(root)?;
    std::env::set_current_dir("/")
}

/// Serves SFTP on stdin and stdout until the client closes them.
pub async fn serve_stdio() {
    let closed = Arc::new(tokio::sync::Notify::new());
    let stream = Stdio {
        input: tokio::io::stdin(),
        output: tokio::io::stdout(),
        closed: closed.clone(),
    };
    let notified = closed.notified();
    russh_sftp::server::run(stream, Filesystem::default()).await;
    notified.await;
}

/// Stdin and stdout as one stream that says when the input ended.
struct Stdio {
    input: tokio::io::Stdin,
    output: tokio::io::Stdout,
    closed: Arc<tokio::sync::Notify>,
}

impl AsyncRead for Stdio {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.input).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() == before
            || matches!(polled, Poll::Ready(Err(_)))
        {
            self.closed.notify_one();
        }
        polled
    }
}

impl AsyncWrite for Stdio {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.output).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.output).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.output).poll_shutdown(cx)
    }
}

enum Open {
    File(std::fs::File),
    /// A directory's entries not yet sent (`None` once all were).
    Dir(Option<Vec<File>>),
}

/// SFTP on this process's filesystem (the machine's, after [`enter_root`]).
#[derive(Default)]
pub struct Filesystem {
    open: HashMap<String, Open>,
    next: u64,
}

impl std::fmt::Debug for Filesystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filesystem")
            .field("open", &self.open.len())
            .finish()
    }
}

/// How an I/O error reads in SFTP.
fn status(error: &std::io::Error) -> StatusCode {
    match error.kind() {
        ErrorKind::NotFound => StatusCode::NoSuchFile,
        ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
        _ => StatusCode::Failure,
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".to_owned(),
        language_tag: "en-US".to_owned(),
    }
}

/// `path` made absolute (against `/`) with `.` and `..` resolved by name.
fn absolute(path: &str) -> PathBuf {
    let mut resolved = PathBuf::from("/");
    for component in Path::new(path).components() {
        match component {
            Component::Normal(name) => resolved.push(name),
            Component::ParentDir => {
                resolved.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    resolved
}

fn entry(name: String, metadata: &std::fs::Metadata) -> File {
    File::new(name, FileAttributes::from(metadata))
}

impl Filesystem {
    fn handle(&mut self, open: Open) -> String {
        self.next += 1;
        let handle = self.next.to_string();
        self.open.insert(handle.clone(), open);
        handle
    }
}

impl russh_sftp::server::Handler for Filesystem {
    type Error = StatusCode;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        Ok(Version::new())
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let mut options: std::fs::OpenOptions = pflags.into();
        if pflags.contains(OpenFlags::CREATE) {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(attrs.permissions.map_or(0o644, |p| p & 0o7777));
        }
        let file = options.open(absolute(&filename)).map_err(|e| status(&e))?;
        Ok(Handle {
            id,
            handle: self.handle(Open::File(file)),
        })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.open.remove(&handle) {
            Some(_) => Ok(ok(id)),
            None => Err(StatusCode::Failure),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let Some(Open::File(file)) = self.open.get(&handle) else {
            return Err(StatusCode::Failure);
        };
        let mut data = vec![0; len.min(1 << 20) as usize];
        let read = file.read_at(&mut data, offset).map_err(|e| status(&e))?;
        if read == 0 && len > 0 {
            return Err(StatusCode::Eof);
        }
        data.truncate(read);
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let Some(Open::File(file)) = self.open.get(&handle) else {
            return Err(StatusCode::Failure);
        };
        file.write_all_at(&data, offset).map_err(|e| status(&e))?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let metadata = std::fs::symlink_metadata(absolute(&path)).map_err(|e| status(&e))?;
        Ok(Attrs {
            id,
            attrs: FileAttributes::from(&metadata),
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let metadata = std::fs::metadata(absolute(&path)).map_err(|e| status(&e))?;
        Ok(Attrs {
            id,
            attrs: FileAttributes::from(&metadata),
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let Some(Open::File(file)) = self.open.get(&handle) else {
            return Err(StatusCode::Failure);
        };
        let metadata = file.metadata().map_err(|e| status(&e))?;
        Ok(Attrs {
            id,
            attrs: FileAttributes::from(&metadata),
        })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let path = absolute(&path);
        if let Some(permissions) = attrs.permissions {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(permissions & 0o7777))
                .map_err(|e| status(&e))?;
        }
        if let Some(size) = attrs.size {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(size))
                .map_err(|e| status(&e))?;
        }
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let Some(Open::File(file)) = self.open.get(&handle) else {
            return Err(StatusCode::Failure);
        };
        if let Some(permissions) = attrs.permissions {
            file.set_permissions(std::fs::Permissions::from_mode(permissions & 0o7777))
                .map_err(|e| status(&e))?;
        }
        if let Some(size) = attrs.size {
            file.set_len(size).map_err(|e| status(&e))?;
        }
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let path = absolute(&path);
        let mut entries = Vec::new();
        for name in [".", ".."] {
            if let Ok(metadata) = std::fs::metadata(path.join(name)) {
                entries.push(entry(name.to_owned(), &metadata));
            }
        }
        for dirent in std::fs::read_dir(&path).map_err(|e| status(&e))? {
            let dirent = dirent.map_err(|e| status(&e))?;
            let Ok(metadata) = std::fs::symlink_metadata(dirent.path()) else {
                continue;
            };
            entries.push(entry(
                dirent.file_name().to_string_lossy().into_owned(),
                &metadata,
            ));
        }
        Ok(Handle {
            id,
            handle: self.handle(Open::Dir(Some(entries))),
        })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        let Some(Open::Dir(entries)) = self.open.get_mut(&handle) else {
            return Err(StatusCode::Failure);
        };
        match entries.take() {
            Some(files) => Ok(Name { id, files }),
            None => Err(StatusCode::Eof),
        }
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        std::fs::remove_file(absolute(&filename)).map_err(|e| status(&e))?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .mode(attrs.permissions.map_or(0o755, |p| p & 0o7777))
            .create(absolute(&path))
            .map_err(|e| status(&e))?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        std::fs::remove_dir(absolute(&path)).map_err(|e| status(&e))?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let path = absolute(&path);
        let real = std::fs::canonicalize(&path).unwrap_or(path);
        Ok(Name {
            id,
            files: vec![File::dummy(real.to_string_lossy())],
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        std::fs::rename(absolute(&oldpath), absolute(&newpath)).map_err(|e| status(&e))?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let target = std::fs::read_link(absolute(&path)).map_err(|e| status(&e))?;
        Ok(Name {
            id,
            files: vec![File::dummy(target.to_string_lossy())],
        })
    }

    async fn symlink(
        &mut self,
        id: u32,
        linkpath: String,
        targetpath: String,
    ) -> Result<Status, Self::Error> {
        std::os::unix::fs::symlink(targetpath, absolute(&linkpath)).map_err(|e| status(&e))?;
        Ok(ok(id))
    }
}

#[cfg(test)]
mod tests {
    use super::absolute;

    #[test]
    fn paths_resolve_by_name_below_the_root() {
        assert_eq!(absolute("a/b"), std::path::Path::new("/a/b"));
        assert_eq!(absolute("/a/../../etc"), std::path::Path::new("/etc"));
        assert_eq!(absolute("."), std::path::Path::new("/"));
    }
}
