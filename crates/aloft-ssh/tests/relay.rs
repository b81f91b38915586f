//! Flow control through a real SSH session (russh on both ends, as patched in
//! `vendor/russh`, over loopback TCP): a port forward carries traffic both ways at once
//! to an echo service that only reads while it can write, the case where a reader that
//! stalls its session deadlocks both directions; and a channel whose reader stopped stops
//! only its own sender, never the session's other channels.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::Arc;
use std::time::Duration;

use aloft_ssh::ca;
use aloft_ssh::client::{self, Credentials};
use aloft_ssh::russh::Channel;
use aloft_ssh::russh::keys::Certificate;
use aloft_ssh::russh::server::{self, Auth, Msg, Session};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The port whose channels are held open and never read.
const STALLED_PORT: u32 = 5001;

/// Accepts any certificate and forwards every direct-tcpip channel to an echo service,
/// except those to [`STALLED_PORT`], which it holds without reading.
struct EchoServer;

impl server::Handler for EchoServer {
    type Error = aloft_ssh::russh::Error;

    async fn auth_openssh_certificate(
        &mut self,
        _user: &str,
        _certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        _host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        if port_to_connect == STALLED_PORT {
            tokio::spawn(async move {
                let _held = channel;
                std::future::pending::<()>().await;
            });
            return Ok(());
        }
        // A small pipe to an echo: it writes back before it reads more, as `cat` does.
        let (near, far) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let (mut from, mut to) = tokio::io::split(far);
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = to.shutdown().await;
        });
        tokio::spawn(aloft_ssh::relay::relay(channel, near));
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(aloft_ssh::russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }
}

fn credentials() -> Credentials {
    let authority = ca::ed25519_from_seed(&[3; 32]);
    let key = ca::ed25519_from_seed(&[4; 32]);
    let request = ca::CertificateRequest {
        key_id: "relay test".to_owned(),
        principals: vec![ca::org_principal("test")],
        valid_for: Duration::from_secs(600),
        serial: 1,
        nonce: [5; 32],
        extensions: Vec::new(),
    };
    let certificate = ca::sign_user_certificate(&authority, key.public_key(), &request).unwrap();
    Credentials { key, certificate }
}

const PAYLOAD: usize = 32 << 20;

/// A client connected to an [`EchoServer`] over loopback TCP, and the server's task.
async fn connected() -> (
    Arc<client::Connection>,
    tokio::task::JoinHandle<Result<(), aloft_ssh::russh::Error>>,
) {
    // Loopback TCP as the transport: a session that writes waits for the socket, so the
    // transport must hold a window's worth as a real one does (an in-memory pipe smaller
    // than the window would stall both sessions on their writes).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client_end = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server_end, _) = listener.accept().await.unwrap();
    let mut methods = aloft_ssh::russh::MethodSet::empty();
    methods.push(aloft_ssh::russh::MethodKind::PublicKey);
    let config = Arc::new(server::Config {
        methods,
        keys: vec![ca::ed25519_from_seed(&[6; 32])],
        channel_buffer_size: aloft_ssh::CHANNEL_QUEUE,
        ..server::Config::default()
    });
    let serving = tokio::spawn(async move {
        let running = server::run_stream(config, server_end, EchoServer).await?;
        running.await
    });
    let connection = client::connect(client_end, "test", &credentials())
        .await
        .unwrap();
    (Arc::new(connection), serving)
}

/// Sends `payload` through a forward to the echo service and returns what came back,
/// with the bytes the forward counted (sent, received).
async fn echo(connection: &Arc<client::Connection>, payload: Vec<u8>) -> (Vec<u8>, (u64, u64)) {
    let (local, far_end) = tokio::io::duplex(64 << 10);
    let forwarding = {
        let connection = connection.clone();
        tokio::spawn(async move { connection.forward(5000, far_end).await })
    };
    let (mut reader, mut writer) = tokio::io::split(local);
    let sending = tokio::spawn(async move {
        writer.write_all(&payload).await.unwrap();
        writer.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    reader.read_to_end(&mut back).await.unwrap();
    sending.await.unwrap();
    (back, forwarding.await.unwrap().unwrap())
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_forward_echoes_bulk_traffic_both_ways_at_once() {
    let (connection, serving) = connected().await;
    // More than both sides' windows (2 MiB each) and queues hold, so a stall would show.
    let payload = payload(PAYLOAD);
    let (echoed, counted) =
        tokio::time::timeout(Duration::from_secs(60), echo(&connection, payload.clone()))
            .await
            .expect("the echo stalled: a direction waited on the other");
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "the echo changed the bytes");
    assert_eq!(counted, (PAYLOAD as u64, PAYLOAD as u64));
    serving.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_nobody_reads_stops_its_sender_and_nothing_else() {
    let (connection, serving) = connected().await;
    // A forward whose far end never reads: its sender may fill the window and the pipes on
    // the way, no more.
    let (local, far_end) = tokio::io::duplex(64 << 10);
    let stalled = {
        let connection = connection.clone();
        tokio::spawn(async move { connection.forward(STALLED_PORT as u16, far_end).await })
    };
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writing = {
        let written = written.clone();
        tokio::spawn(async move {
            let (_reader, mut writer) = tokio::io::split(local);
            let chunk = vec![7u8; 64 << 10];
            loop {
                writer.write_all(&chunk).await.unwrap();
                written.fetch_add(chunk.len(), std::sync::atomic::Ordering::AcqRel);
            }
        })
    };
    // Meanwhile another channel of the same session carries more than the stalled one's
    // window and russh's queue (100 messages of 32 KiB as published) together.
    let payload = payload(8 << 20);
    let (echoed, _) =
        tokio::time::timeout(Duration::from_secs(60), echo(&connection, payload.clone()))
            .await
            .expect("a channel nobody reads stalled the session's other channels");
    assert!(echoed == payload, "the echo changed the bytes");
    // The stalled channel's window (2 MiB) and the pipes before it (64 KiB, the relay's
    // 32 KiB buffer and a chunk in flight) are all its sender may have written.
    let written = written.load(std::sync::atomic::Ordering::Acquire);
    assert!(
        written <= (2 << 20) + (256 << 10),
        "{written} bytes went into a channel nobody reads: its window did not stop them"
    );
    writing.abort();
    stalled.abort();
    serving.abort();
}
