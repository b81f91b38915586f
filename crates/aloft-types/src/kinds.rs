//! Kinds of platform objects that have a fixed set of values: public addresses and log
//! sinks.

named_enum! {
    /// The kind of an app's public address (Fly's `type`). Aloft allocates dedicated
    /// IPv4 addresses from the operator's pool.
    pub enum IpKind ("address type") {
        /// A dedicated IPv4 address.
        V4 = "v4",
    }
}

named_enum! {
    /// The protocol a log sink speaks.
    pub enum SinkKind ("log sink kind") {
        /// NDJSON lines in batches, POSTed to an `http(s)://` URL.
        Http = "http",
        /// Loki's push API.
        Loki = "loki",
        /// RFC 5424 over `tcp://` or `tls://`.
        Syslog = "syslog",
    }
}

named_enum! {
    /// A host's state as the platform shows it: what its operator set (`up`, `cordoned`,
    /// `draining`), or `down` once it missed heartbeats for `host_down_after`.
    pub enum HostState ("host state") {
        /// Heartbeating and taking new machines.
        Up = "up",
        /// Takes no new machines; its machines run on.
        Cordoned = "cordoned",
        /// Takes no new machines; its machines are being moved to other hosts.
        Draining = "draining",
        /// Missed its heartbeats: its machines without volumes were moved elsewhere.
        Down = "down",
    }
}
