//! The kinds of a machine's events (Fly's event `type`s, and Aloft's own).

named_enum! {
    /// What happened to a machine. The API writes it as the event's `type`.
    pub enum EventKind ("machine event type") {
        /// The machine was created, or its launch failed (status `failed`, with `error`).
        Launch = "launch",
        /// A start was asked for, or the machine's process started.
        Start = "start",
        /// A stop was asked for (by a user, or by the platform's autostop).
        Stop = "stop",
        /// The machine's process ended (`exit_event` says how, and whether the platform
        /// asked for it).
        Exit = "exit",
        /// Its config was replaced.
        Update = "update",
        Restart = "restart",
        /// A signal was delivered to its process.
        Signal = "signal",
        Suspend = "suspend",
        /// Taken out of the proxy's rotation, and back in.
        Cordon = "cordon",
        Uncordon = "uncordon",
        Destroy = "destroy",
        /// An SSH session was opened, or refused.
        Ssh = "ssh",
    }
}
