//! The private SSH listener under a flood (issue 20): of 2,000 connections from one
//! address that never log in, only `ssh_max_startups_per_source` are let in (they get the
//! server's greeting) and the rest are closed at once; those let in are closed when the
//! login grace time has passed; then the listener greets a new connection again.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aloft_testkit::eventually;
use tokio::io::AsyncReadExt as _;

use crate::{Host, Server};

const GREETING: &[u8] = b"SSH-2.0-aloft";

/// What the listener does with a new connection: `Some(true)` it greets it, `Some(false)`
/// it closes it, `None` neither within 5 s. The stream is kept when greeted.
async fn knock(
    namespace: &std::path::Path,
    address: SocketAddr,
) -> (Option<bool>, Option<tokio::net::TcpStream>) {
    let Ok(mut stream) =
        aloft_net::netns::connect_tcp(Some(namespace), address, Duration::from_secs(5)).await
    else {
        return (Some(false), None);
    };
    let mut read = vec![0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut read)).await {
        Ok(Ok(0) | Err(_)) => (Some(false), None),
        Ok(Ok(n)) => (Some(read[..n].starts_with(GREETING)), Some(stream)),
        Err(_) => (None, None),
    }
}

#[tokio::test]
async fn two_thousand_idle_ssh_connections_are_capped_and_timed_out() {
    let host = Host::with_proxy(
        "[agent]\nssh_login_grace_seconds = 3\nssh_max_startups_per_source = 10\nssh_max_startups = 100",
    );
    let _server = Server::start(&host).await;
    let namespace = &host.netns.path();
    let address: SocketAddr = "[fdaa::3]:22".parse().unwrap();
    // The listener is up: a first connection is greeted (the probe can succeed).
    let (greeted, first) = eventually("the SSH listener", Duration::from_secs(30), || async {
        let (greeted, stream) = knock(namespace, address).await;
        (greeted == Some(true)).then_some((greeted, stream))
    })
    .await;
    assert_eq!(greeted, Some(true));
    let mut held = vec![first.unwrap()];
    let flooded = Instant::now();
    let (mut let_in, mut closed, mut silent) = (1, 0, 0);
    for _ in 1..2000 {
        match knock(namespace, address).await {
            (Some(true), Some(stream)) => {
                let_in += 1;
                held.push(stream);
            }
            (Some(_), _) => closed += 1,
            (None, _) => silent += 1,
        }
    }
    // Ten at a time: the first ten let in hold their places for the 3 s grace, so a
    // flood that outlasts the grace (a loaded machine) sees ten more per grace gone by.
    let graces = 1 + usize::try_from(flooded.elapsed().as_secs() / 3).unwrap_or(0);
    assert!(
        (10..=10 * graces).contains(&let_in) && let_in + closed == 2000 && silent == 0,
        "let in {let_in} (10 per 3 s grace; the flood took {:?}), closed at once {closed}, \
         neither {silent}",
        flooded.elapsed()
    );
    // Those let in are closed once the grace has passed, not before.
    for mut stream in held {
        let mut rest = Vec::new();
        // An end of stream or a reset: either way the server closed it.
        let _ended = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut rest))
            .await
            .expect("closed by the server");
    }
    let took = flooded.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "closed {took:?} after the flood began, before the 3 s grace"
    );
    // The places are free again: a new connection is greeted.
    let (again, _) = knock(namespace, address).await;
    assert_eq!(again, Some(true));
}
