//! A port forward carries traffic both ways at once through a real SSH session (russh on
//! both ends over an in-memory stream) to an echo service that only reads while it can
//! write: the case where a reader that stalls its session deadlocks both directions.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::Arc;
use std::time::Duration;

use aloft_ssh::ca;
use aloft_ssh::client::{self, Credentials};
use aloft_ssh::russh::Channel;
use aloft_ssh::russh::keys::Certificate;
use aloft_ssh::russh::server::{self, Auth, Msg, Session};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Accepts any certificate and forwards every direct-tcpip channel to an echo service.
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
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
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

const PAYLOAD: u32 = 32 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_forward_echoes_bulk_traffic_both_ways_at_once() {
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
        ..server::Config::default()
    });
    let serving = tokio::spawn(async move {
        let running = server::run_stream(config, server_end, EchoServer).await?;
        running.await
    });
    let connection = Arc::new(
        client::connect(client_end, "test", &credentials())
            .await
            .unwrap(),
    );

    let (local, far_end) = tokio::io::duplex(64 << 10);
    let forwarding = {
        let connection = connection.clone();
        tokio::spawn(async move { connection.forward(5000, far_end).await })
    };
    // More than both sides' windows (2 MiB each) and queues hold, so a stall would show.
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i % 251) as u8).collect();
    let (mut reader, mut writer) = tokio::io::split(local);
    let echoed = tokio::time::timeout(Duration::from_secs(60), async {
        let sending = {
            let payload = payload.clone();
            tokio::spawn(async move {
                writer.write_all(&payload).await.unwrap();
                writer.shutdown().await.unwrap();
            })
        };
        let mut back = Vec::with_capacity(payload.len());
        reader.read_to_end(&mut back).await.unwrap();
        sending.await.unwrap();
        back
    })
    .await
    .expect("the echo stalled: a direction waited on the other");
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "the echo changed the bytes");
    let (sent, received) = forwarding.await.unwrap().unwrap();
    assert_eq!(
        (sent, received),
        (payload.len() as u64, payload.len() as u64)
    );
    serving.abort();
}
