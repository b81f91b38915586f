//! Reading a channel without holding up its whole session.
//!
//! russh grants the peer more window as soon as data arrives and hands the data to the
//! channel over a small bounded queue: a reader that stops to write its data somewhere
//! stalls the session, and with it the window adjustments of every other channel and of
//! the other direction. Two directions that wait on each other (an echo server, `cat`)
//! then deadlock once both windows are spent. An [`Inbox`] takes the channel's messages
//! as they arrive and holds up to a limit of unread data for its reader; only past that
//! limit does the session wait, which is the backpressure of a reader that really stopped.

use std::sync::Arc;

use russh::{ChannelMsg, ChannelReadHalf};
use tokio::sync::{Semaphore, mpsc};

/// Unread data an inbox holds before it makes the session wait.
pub const DEFAULT_LIMIT: usize = 8 << 20;

/// A channel's incoming messages, taken from the session as they arrive.
#[derive(Debug)]
pub struct Inbox {
    messages: mpsc::UnboundedReceiver<ChannelMsg>,
    room: Arc<Semaphore>,
    limit: u32,
    pump: tokio::task::JoinHandle<()>,
}

impl Inbox {
    /// Starts taking `reader`'s messages, holding up to [`DEFAULT_LIMIT`] bytes of data.
    pub fn new(reader: ChannelReadHalf) -> Self {
        Self::with_limit(reader, DEFAULT_LIMIT)
    }

    /// Starts taking `reader`'s messages, holding up to `limit` bytes of data.
    pub fn with_limit(mut reader: ChannelReadHalf, limit: usize) -> Self {
        let limit = u32::try_from(limit.min(Semaphore::MAX_PERMITS))
            .unwrap_or(u32::MAX)
            .max(1);
        let room = Arc::new(Semaphore::new(limit as usize));
        let (sender, messages) = mpsc::unbounded_channel();
        let pump = tokio::spawn({
            let room = room.clone();
            async move {
                while let Some(message) = reader.wait().await {
                    let cost = cost(&message, limit);
                    if cost > 0 {
                        match room.acquire_many(cost).await {
                            Ok(permits) => permits.forget(),
                            Err(_) => break,
                        }
                    }
                    if sender.send(message).is_err() {
                        break;
                    }
                }
            }
        });
        Self {
            messages,
            room,
            limit,
            pump,
        }
    }

    /// The next message, or `None` once the channel is closed.
    pub async fn recv(&mut self) -> Option<ChannelMsg> {
        let message = self.messages.recv().await?;
        let cost = cost(&message, self.limit);
        if cost > 0 {
            self.room.add_permits(cost as usize);
        }
        Some(message)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

/// The room a message takes: its data, up to the whole limit.
fn cost(message: &ChannelMsg, limit: u32) -> u32 {
    match message {
        ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
            u32::try_from(data.len()).unwrap_or(u32::MAX).min(limit)
        }
        _ => 0,
    }
}
