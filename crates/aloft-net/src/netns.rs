//! Network namespaces: doing work inside one without moving the whole process.
//!
//! A thread may switch namespaces (`setns`) without touching the others. Sockets keep the
//! namespace they were created in, so a socket made by a short-lived thread inside a
//! namespace serves that namespace from any thread afterwards. Everything here uses that:
//! a fresh thread enters the namespace, creates what is needed, and ends.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

/// Why work inside a namespace could not be done.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("opening network namespace {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("entering network namespace {}", path.display())]
    Enter {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the worker thread for network namespace {} failed", path.display())]
    Thread { path: PathBuf },
}

/// The namespace file of a process (`/proc/PID/ns/net`).
pub fn of_process(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

/// Runs `work` on a thread inside the namespace at `path` (the caller's own namespace when
/// `path` is `None`) and returns what it returns.
pub fn run_in<T, F>(path: Option<&Path>, work: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let Some(path) = path else {
        return Ok(work());
    };
    let file = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_owned(),
        source,
    })?;
    let owned = path.to_owned();
    let thread = std::thread::Builder::new()
        .name("aloft-netns".to_owned())
        .spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|errno| NetnsError::Enter {
                path: owned.clone(),
                source: std::io::Error::from(errno),
            })?;
            Ok(work())
        })
        .map_err(|_| NetnsError::Thread {
            path: path.to_owned(),
        })?;
    thread.join().map_err(|_| NetnsError::Thread {
        path: path.to_owned(),
    })?
}

/// A UDP socket bound to `bind`, made inside the namespace at `namespace` (the caller's
/// own when `None`): what it sends leaves from there, and it stays there.
pub fn udp_socket(
    namespace: Option<&Path>,
    bind: std::net::SocketAddr,
) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = run_in(namespace, move || {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(bind),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        socket.set_nonblocking(true)?;
        socket.bind(&bind.into())?;
        Ok::<_, std::io::Error>(std::net::UdpSocket::from(socket))
    })
    .map_err(std::io::Error::other)??;
    tokio::net::UdpSocket::from_std(socket)
}

/// Opens a TCP connection to `address` from inside the namespace at `namespace` (the
/// caller's own when `None`), giving up after `timeout`. The socket is made in the
/// namespace and connected from the caller's runtime.
pub async fn connect_tcp(
    namespace: Option<&Path>,
    address: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let stream = match namespace {
        None => tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await,
        Some(path) => {
            let socket = run_in(Some(path), move || {
                let socket = socket2::Socket::new(
                    socket2::Domain::for_address(address),
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )?;
                socket.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(std::net::TcpStream::from(socket))
            })
            .map_err(std::io::Error::other)??;
            let socket = tokio::net::TcpSocket::from_std_stream(socket);
            tokio::time::timeout(timeout, socket.connect(address)).await
        }
    }
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}
