//! `aloft logs`: the app's recent (or `--since`) lines, then the new ones as they come.

use aloft_client::LogsRequest;
use aloft_types::api::LogEntryResponse;
use anyhow::Context as _;
use clap::Args;

use crate::Failure;
use crate::api::client;
use crate::output::Output;

/// `aloft logs ship`: where the lines go besides Aloft's own store.
#[derive(Debug, clap::Subcommand)]
pub enum LogsCommand {
    /// Ship log lines to a sink.
    #[command(subcommand)]
    Ship(ShipCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum ShipCommand {
    /// Ship the app's lines (with -a) or every app's of the organization (--all-apps) to
    /// a sink: `--type http|loki|syslog --url URL [--header K=V]...`.
    Add {
        /// `http` (NDJSON POSTs), `loki` (the push API) or `syslog` (RFC 5424 over TCP).
        #[arg(long = "type", value_name = "KIND")]
        kind: String,
        /// `http(s)://host:port/path` (http, loki) or `tcp://` / `tls://host:port` (syslog).
        #[arg(long)]
        url: String,
        /// A header sent with every request (credentials, say); stored encrypted.
        #[arg(long = "header", value_name = "K=V")]
        headers: Vec<String>,
        /// Every app of the organization instead of one.
        #[arg(long)]
        all_apps: bool,
        /// A CA certificate (PEM file) the collector's certificate chains to, for a
        /// private collector over `https://` or `tls://`.
        #[arg(long, value_name = "FILE")]
        ca: Option<std::path::PathBuf>,
    },
    /// The organization's sinks, with lines sent, dropped, failures and lag.
    List,
    /// Stop shipping to a sink.
    Remove { id: String },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LogsArgs {
    #[command(subcommand)]
    pub command: Option<LogsCommand>,
    /// Only this machine's lines.
    #[arg(long, short = 'm', visible_alias = "instance", short_alias = 'i')]
    pub machine: Option<String>,
    /// Only lines of machines in this region.
    #[arg(long, short = 'r')]
    pub region: Option<String>,
    /// From this time: an age (`10m`, `1h`, `7d`) or RFC 3339 (default: the last 100
    /// lines).
    #[arg(long)]
    pub since: Option<String>,
    /// Before this time (same forms); implies --no-tail.
    #[arg(long)]
    pub until: Option<String>,
    /// Only lines containing this text (case-sensitive).
    #[arg(long, value_name = "TEXT")]
    pub grep: Option<String>,
    /// Print the stored lines and stop instead of following new ones.
    #[arg(long, short = 'n')]
    pub no_tail: bool,
}

/// Fly's line format: `2026-11-22T12:00:00.123456789Z app[148e21ea7d2e89] ams [info] text`.
fn render(entry: &LogEntryResponse) -> String {
    let (provider, level) = match entry.stream.as_str() {
        "stderr" => ("app", "error"),
        "platform" => ("runner", "info"),
        _ => ("app", "info"),
    };
    format!(
        "{} {provider}[{}] {} [{level}] {}",
        entry.timestamp, entry.machine, entry.region, entry.message
    )
}

fn print(entry: &LogEntryResponse, json: bool, out: &mut Output) {
    if json {
        out.data(&serde_json::to_string(entry).unwrap_or_default());
    } else {
        out.data(&render(entry));
    }
}

pub(crate) async fn ship(
    command: ShipCommand,
    app: Option<&str>,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let client = client()?;
    match command {
        ShipCommand::Add {
            kind,
            url,
            headers,
            all_apps,
            ca,
        } => {
            let ca_pem = match &ca {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("reading --ca {}", path.display()))?,
                ),
                None => None,
            };
            let mut parsed = std::collections::BTreeMap::new();
            for pair in &headers {
                let (key, value) = pair
                    .split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| anyhow::anyhow!("--header {pair:?}: expected K=V"))?;
                parsed.insert(key.to_owned(), value.to_owned());
            }
            let app = if all_apps {
                None
            } else {
                Some(app.map(str::to_owned).ok_or_else(|| {
                    anyhow::anyhow!("name the app (-a APP, or a fly.toml here), or pass --all-apps")
                })?)
            };
            let sink = client
                .create_log_sink(&aloft_types::api::CreateLogSinkRequest {
                    kind,
                    url,
                    headers: parsed,
                    app,
                    ca_pem,
                })
                .await
                .context("adding the log sink")?;
            if json {
                out.json(&sink)?;
            } else {
                out.status(&format!(
                    "shipping the lines of {} to {} ({}) from now on: sink {}",
                    sink.app.as_deref().unwrap_or("every app"),
                    sink.url,
                    sink.kind,
                    sink.id
                ));
            }
        }
        ShipCommand::List => {
            let sinks = client.log_sinks().await.context("listing log sinks")?;
            if json {
                out.json(&sinks)?;
                return Ok(());
            }
            let rows: Vec<Vec<String>> = sinks
                .iter()
                .map(|s| {
                    vec![
                        s.id.clone(),
                        s.kind.to_string(),
                        s.url.clone(),
                        s.app.clone().unwrap_or_else(|| "(all apps)".to_owned()),
                        s.sent.to_string(),
                        s.dropped.to_string(),
                        s.failures.to_string(),
                        s.lag.to_string(),
                    ]
                })
                .collect();
            out.data(&crate::table::render(
                &[
                    "ID", "KIND", "URL", "APP", "SENT", "DROPPED", "FAILURES", "LAG",
                ],
                &rows,
            ));
        }
        ShipCommand::Remove { id } => {
            client
                .remove_log_sink(&id)
                .await
                .with_context(|| format!("removing log sink {id}"))?;
            out.report(
                json,
                serde_json::json!({ "sink": id, "removed": true }),
                &format!("log sink {id} removed"),
            )?;
        }
    }
    Ok(())
}

pub(crate) async fn logs(
    args: LogsArgs,
    app: &str,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let client = client()?;
    let mut request = LogsRequest {
        since: args.since.clone(),
        until: args.until.clone(),
        machine: args.machine.clone(),
        region: args.region.clone(),
        text: args.grep.clone(),
        limit: Some(if args.since.is_some() { 5_000 } else { 100 }),
        cursor: None,
        newest: Some(args.since.is_none()),
    };
    // The stored lines: the newest 100, or every line from --since, page by page.
    let mut cursor;
    loop {
        let page = client
            .logs(app, &request)
            .await
            .with_context(|| format!("reading the logs of {app}"))?;
        let count = page.entries.len();
        for entry in in_time_order(page.entries) {
            print(&entry, json, out);
        }
        cursor = page.next_cursor;
        if request.newest == Some(true) || count < request.limit.unwrap_or(0) {
            break;
        }
        request.cursor = Some(cursor.clone());
    }
    if args.no_tail || args.until.is_some() {
        return Ok(());
    }
    let follow = LogsRequest {
        since: None,
        until: None,
        limit: None,
        newest: None,
        cursor: Some(cursor),
        ..request
    };
    let following = client.follow_logs(app, &follow, |entry| {
        print(&entry, json, out);
        true
    });
    let ended = tokio::select! {
        ended = following => ended.with_context(|| format!("following the logs of {app}"))?,
        _ = tokio::signal::ctrl_c() => return Ok(()),
    };
    match ended {
        Some(end) => Err(anyhow::anyhow!("the log stream ended: {}", end.message).into()),
        None => Err(anyhow::anyhow!(
            "the log stream of {app} ended: the connection to the API closed; run `aloft logs` again to go on"
        )
        .into()),
    }
}

/// Lines in the order they were written: the store keeps them in the order they arrived,
/// and a machine's stdout, its stderr and the platform's events arrive each at its pace.
fn in_time_order(mut entries: Vec<LogEntryResponse>) -> Vec<LogEntryResponse> {
    entries.sort_by_key(|e| e.timestamp_ns);
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_shown_in_time_order() {
        let entry = |id: &str, ns: i64| LogEntryResponse {
            id: id.to_owned(),
            timestamp: String::new(),
            timestamp_ns: ns,
            app: "web".to_owned(),
            machine: "m".to_owned(),
            region: "ams".to_owned(),
            instance: "01".to_owned(),
            stream: "stdout".to_owned(),
            message: String::new(),
        };
        let shown = in_time_order(vec![
            entry("a", 3),
            entry("b", 1),
            entry("c", 3),
            entry("d", 2),
        ]);
        let ids: Vec<&str> = shown.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            ["b", "d", "a", "c"],
            "by time, arrival order kept for ties"
        );
    }

    #[test]
    fn lines_look_like_flys() {
        let entry = LogEntryResponse {
            id: "h-1".to_owned(),
            timestamp: "2026-11-22T12:00:00.000000001Z".to_owned(),
            timestamp_ns: 1,
            app: "web".to_owned(),
            machine: "148e21ea7d2e89".to_owned(),
            region: "ams".to_owned(),
            instance: "01".to_owned(),
            stream: "stderr".to_owned(),
            message: "boom".to_owned(),
        };
        assert_eq!(
            render(&entry),
            "2026-11-22T12:00:00.000000001Z app[148e21ea7d2e89] ams [error] boom"
        );
    }

    /// `aloft logs`: the app's output and the platform's own lines, interleaved in time.
    #[test]
    fn a_page_of_logs_reads_like_flys() {
        let entry = |ns: i64, stream: &str, message: &str| LogEntryResponse {
            id: format!("h-{ns}"),
            timestamp: format!("2026-12-06T10:00:0{ns}.000000000Z"),
            timestamp_ns: ns,
            app: "web".to_owned(),
            machine: "148e21ea7d2e89".to_owned(),
            region: "ams".to_owned(),
            instance: "01JEXAMPLE".to_owned(),
            stream: stream.to_owned(),
            message: message.to_owned(),
        };
        let page = in_time_order(vec![
            entry(3, "stderr", "panicked: cannot open the database"),
            entry(1, "platform", "flyd: machine start started"),
            entry(2, "stdout", "listening on [::]:8080"),
            entry(
                4,
                "platform",
                "flyd: machine exit restarting (exit code 101)",
            ),
        ]);
        let text: Vec<String> = page.iter().map(render).collect();
        insta::assert_snapshot!(text.join("\n"));
    }
}
