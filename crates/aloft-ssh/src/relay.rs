//! Carrying a byte stream over an SSH channel (port forwards, on both ends).

use russh::ChannelMsg;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Carries bytes between an SSH channel and `stream` until both directions have ended:
/// `stream`'s end of input becomes the channel's EOF, the channel's EOF shuts `stream`'s
/// output down, a closed channel ends both. Returns the bytes carried (to the channel,
/// from it). Unlike russh's `ChannelStream`, an empty data message is not taken for the
/// end of the data (a long transfer can see one).
pub async fn relay<M, S>(
    channel: russh::Channel<M>,
    stream: S,
) -> Result<(u64, u64), crate::client::ClientError>
where
    M: From<(russh::ChannelId, ChannelMsg)> + Send + Sync + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut remote, writer) = channel.split();
    let (mut local_in, mut local_out) = tokio::io::split(stream);
    let mut buffer = vec![0; 32 * 1024];
    let (mut local_open, mut remote_open) = (true, true);
    let (mut sent, mut received) = (0u64, 0u64);
    while local_open || remote_open {
        tokio::select! {
            read = local_in.read(&mut buffer), if local_open => match read {
                Ok(0) | Err(_) => {
                    local_open = false;
                    writer.eof().await?;
                }
                Ok(n) => {
                    writer.data_bytes(buffer[..n].to_vec()).await?;
                    sent += n as u64;
                }
            },
            message = remote.wait(), if remote_open => match message {
                Some(ChannelMsg::Data { data }) => {
                    local_out.write_all(&data).await?;
                    received += data.len() as u64;
                }
                Some(ChannelMsg::Eof) => {
                    remote_open = false;
                    let _ = local_out.shutdown().await;
                }
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
        }
    }
    let _ = writer.close().await;
    Ok((sent, received))
}
