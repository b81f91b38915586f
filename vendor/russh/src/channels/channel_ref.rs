use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;
use tokio::sync::mpsc::Sender;

use super::WindowSizeRef;
use crate::ChannelMsg;

/// Data a channel's reader has taken that the session has not yet given back to the peer
/// as window (aloft's patch: the window follows the reader, not the arrival of data).
#[derive(Debug, Default)]
pub(crate) struct Consumed {
    bytes: AtomicU64,
    /// Wakes the session that owns the channel; set when its first data arrives.
    wake: OnceLock<Arc<Notify>>,
}

impl Consumed {
    /// The reader took a message: `len` bytes of it may be given back.
    pub(crate) fn add(&self, len: usize) {
        if len == 0 {
            return;
        }
        self.bytes.fetch_add(len as u64, Ordering::AcqRel);
        if let Some(wake) = self.wake.get() {
            wake.notify_one();
        }
    }

    /// Takes what was consumed since the last call.
    pub(crate) fn take(&self) -> u64 {
        self.bytes.swap(0, Ordering::AcqRel)
    }

    /// Whether the reader took anything not yet given back.
    pub(crate) fn pending(&self) -> bool {
        self.bytes.load(Ordering::Acquire) > 0
    }

    /// Makes the reader wake `wake` (the session's) when it takes data.
    pub(crate) fn attach(&self, wake: &Arc<Notify>) {
        let _ = self.wake.set(wake.clone());
    }
}

/// A handle to the [`super::Channel`]'s to be able to transmit messages
/// to it and update it's `window_size`.
#[derive(Debug)]
pub struct ChannelRef {
    pub(super) sender: Sender<ChannelMsg>,
    pub(super) window_size: WindowSizeRef,
    pub(crate) consumed: Arc<Consumed>,
}

impl ChannelRef {
    pub fn new(sender: Sender<ChannelMsg>) -> Self {
        Self {
            sender,
            window_size: WindowSizeRef::new(0),
            consumed: Arc::default(),
        }
    }

    pub(crate) fn window_size(&self) -> &WindowSizeRef {
        &self.window_size
    }

    pub(crate) fn consumed(&self) -> &Arc<Consumed> {
        &self.consumed
    }
}

impl std::ops::Deref for ChannelRef {
    type Target = Sender<ChannelMsg>;

    fn deref(&self) -> &Self::Target {
        &self.sender
    }
}
