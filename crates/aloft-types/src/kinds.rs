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
