//! Carrying a byte stream over an SSH channel (port forwards, on both ends).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use russh::ChannelMsg;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Why a relay ended early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("SSH: {0}")]
    Ssh(#[from] russh::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Carries bytes between an SSH channel and `stream` until both directions have ended:
/// `stream`'s end of input becomes the channel's EOF, the channel's EOF shuts `stream`'s
/// output down, a closed channel ends both. Returns the bytes carried (to the channel,
/// from it). Unlike russh's `ChannelStream`, an empty data message is not taken for the
/// end of the data (a long transfer can see one).
pub async fn relay<M, S>(channel: russh::Channel<M>, stream: S) -> Result<(u64, u64), RelayError>
where
    M: From<(russh::ChannelId, ChannelMsg)> + Send + Sync + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut remote, writer) = channel.split();
    let (mut local_in, mut local_out) = tokio::io::split(stream);
    // The two directions run side by side: waiting for the channel's window to send must
    // never stop the other direction from being read. Both end once each side has sent
    // its EOF, or as soon as the channel closes.
    let closed = tokio::sync::Notify::new();
    let up_finished = tokio::sync::Notify::new();
    let up_done = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let up_loop = async {
        let mut buffer = vec![0; 32 * 1024];
        loop {
            match local_in.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    writer.data_bytes(buffer[..n].to_vec()).await?;
                    sent.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
        writer.eof().await?;
        Ok::<(), RelayError>(())
    };
    let up = async {
        // A closed channel also ends the way up, which may wait on a quiet local side.
        let result = tokio::select! {
            done = up_loop => done,
            () = closed.notified() => Ok(()),
        };
        up_done.store(true, Ordering::Release);
        up_finished.notify_one();
        result
    };
    let down = async {
        let mut received = 0u64;
        let mut eof = false;
        loop {
            tokio::select! {
                message = remote.wait() => match message {
                    Some(ChannelMsg::Data { data }) => {
                        local_out.write_all(&data).await?;
                        received += data.len() as u64;
                    }
                    Some(ChannelMsg::Eof) => {
                        eof = true;
                        let _ = local_out.shutdown().await;
                        if up_done.load(Ordering::Acquire) {
                            break;
                        }
                    }
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                },
                () = up_finished.notified(), if eof => break,
            }
        }
        closed.notify_one();
        let _ = local_out.shutdown().await;
        Ok::<u64, RelayError>(received)
    };
    let (up, received) = tokio::join!(up, down);
    let _ = writer.close().await;
    up?;
    Ok((sent.into_inner(), received?))
}
