//! `aloft machine run`: a machine from an image, watched until it has kept running.

use std::time::{Duration, Instant};

use aloft_client::Client;
use aloft_types::MachineState;
use aloft_types::api::{MachineRequest, MachineResponse};
use aloft_types::machine::{
    Autostop, Handler, MachineConfig, MachineGuest, MachineInit, MachineMount, MachinePort,
    MachineRestart, MachineService, Protocol, RestartPolicy,
};
use anyhow::{Context as _, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The image to run.
    image: String,
    /// The command to run instead of the image's.
    #[arg(trailing_var_arg = true)]
    command: Vec<String>,
    #[arg(long)]
    name: Option<String>,
    /// NAME=VALUE, repeatable.
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// A volume (name or id) and where to mount it: data:/data.
    #[arg(long, value_name = "VOLUME:/PATH")]
    volume: Option<String>,
    #[arg(long, short = 'r')]
    region: Option<String>,
    /// no, always or on-failure.
    #[arg(long)]
    restart: Option<String>,
    /// Restarts allowed by on-failure.
    #[arg(long)]
    max_retries: Option<u32>,
    /// Memory in MB.
    #[arg(long)]
    memory: Option<u32>,
    #[arg(long)]
    cpus: Option<u32>,
    /// A size preset (`aloft platform vm-sizes`); --memory and --cpus change it.
    #[arg(long, value_name = "NAME")]
    vm_size: Option<String>,
    /// A public port, as flyctl reads it: PORT[:MACHINE_PORT][/PROTOCOL[:HANDLER...]],
    /// e.g. 80/tcp:http or 443:8080/tcp:tls:http; repeatable.
    #[arg(long = "port", short = 'p', value_name = "PORT")]
    ports: Vec<String>,
    /// Stop the machine when the proxy sees it idle: stop (the flag alone), suspend or
    /// off (the default).
    #[arg(long, value_name = "stop|suspend|off", num_args = 0..=1, default_missing_value = "stop")]
    autostop: Option<String>,
    /// Start the stopped machine for a request (the default); --autostart=false turns
    /// it off.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    autostart: Option<bool>,
    /// The command that runs the machine's command (the image's ENTRYPOINT), split into
    /// words.
    #[arg(long, value_name = "COMMAND")]
    entrypoint: Option<String>,
    /// KEY=VALUE, repeatable: the machine's metadata.
    #[arg(long = "metadata", short = 'm', value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// Destroy the machine when it exits.
    #[arg(long)]
    rm: bool,
    /// Run on a schedule: hourly, daily, weekly or monthly.
    #[arg(long, value_name = "SCHEDULE")]
    schedule: Option<String>,
    /// Machine ids (comma-separated) this one stands by for: it is made stopped and
    /// started when their host is lost.
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    standby_for: Vec<String>,
    /// Return once created, without waiting for it to start.
    #[arg(long)]
    pub(super) detach: bool,
}

/// One `-p` value as flyctl reads it: PORT[:MACHINE_PORT][/PROTOCOL[:HANDLER...]].
fn port_service(spec: &str) -> anyhow::Result<MachineService> {
    let wrong = |why: &str| {
        anyhow::anyhow!(
            "--port {spec:?}: {why}; expected PORT[:MACHINE_PORT][/PROTOCOL[:HANDLER...]], e.g. 80/tcp:http"
        )
    };
    let (ports, rest) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let (public, internal) = ports.split_once(':').unwrap_or((ports, ports));
    let public: u16 = public
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| wrong("the port is not a number from 1 to 65535"))?;
    let internal: u16 = internal
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| wrong("the machine's port is not a number from 1 to 65535"))?;
    let mut words = rest.split(':');
    let protocol = match words.next().unwrap_or("tcp") {
        "tcp" | "" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => return Err(wrong(&format!("unknown protocol {other:?} (tcp or udp)"))),
    };
    let mut handlers = Vec::new();
    for word in words {
        handlers.push(match word {
            "http" => Handler::Http,
            "tls" => Handler::Tls,
            "pg_tls" => Handler::PgTls,
            "proxy_proto" => Handler::ProxyProto,
            other => {
                return Err(wrong(&format!(
                    "unknown handler {other:?} (http, tls, pg_tls or proxy_proto)"
                )));
            }
        });
    }
    if protocol == Protocol::Udp && !handlers.is_empty() {
        return Err(wrong("a udp port takes no handlers"));
    }
    Ok(MachineService {
        protocol,
        internal_port: internal,
        autostop: None,
        autostart: None,
        min_machines_running: None,
        ports: vec![MachinePort {
            port: Some(public),
            handlers,
            ..MachinePort::default()
        }],
        checks: Vec::new(),
        concurrency: None,
        force_instance_key: None,
        force_instance_description: None,
    })
}

/// `-p` values as services: one per machine port and protocol, with its public ports.
fn port_services(specs: &[String]) -> anyhow::Result<Vec<MachineService>> {
    let mut services: Vec<MachineService> = Vec::new();
    for spec in specs {
        let service = port_service(spec)?;
        match services
            .iter_mut()
            .find(|s| s.internal_port == service.internal_port && s.protocol == service.protocol)
        {
            Some(existing) => existing.ports.extend(service.ports),
            None => services.push(service),
        }
    }
    Ok(services)
}

pub(super) async fn run_machine(
    client: &Client,
    app: &str,
    args: RunArgs,
) -> anyhow::Result<MachineResponse> {
    let mut config = MachineConfig {
        image: args.image,
        ..MachineConfig::default()
    };
    if !args.command.is_empty() {
        config.init = MachineInit {
            cmd: args.command,
            ..MachineInit::default()
        };
    }
    for pair in &args.env {
        let (name, value) = pair
            .split_once('=')
            .filter(|(n, _)| !n.is_empty())
            .with_context(|| format!("--env {pair:?} is not NAME=VALUE"))?;
        config.env.insert(name.to_owned(), value.to_owned());
    }
    if let Some(spec) = &args.volume {
        let (volume, path) = spec
            .split_once(':')
            .with_context(|| format!("--volume {spec:?} is not VOLUME:/PATH"))?;
        let volumes = client.list_volumes(app).await?;
        let found = volumes
            .iter()
            .find(|v| v.id == volume || (v.name == volume && v.attached_machine_id.is_none()))
            .with_context(|| {
                format!("app {app} has no unattached volume named or numbered {volume:?}")
            })?;
        config.mounts.push(MachineMount {
            volume: found.id.clone(),
            path: path.to_owned(),
            ..MachineMount::default()
        });
    }
    if let Some(policy) = &args.restart {
        let policy = match policy.as_str() {
            "no" | "never" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "on-failure" => RestartPolicy::OnFailure,
            other => bail!("--restart {other:?}: use no, always or on-failure"),
        };
        config.restart = Some(MachineRestart {
            policy: Some(policy),
            max_retries: args.max_retries.unwrap_or(0),
        });
    }
    if let Some(entrypoint) = &args.entrypoint {
        config.init.entrypoint = shlex::split(entrypoint)
            .filter(|words| !words.is_empty())
            .with_context(|| format!("--entrypoint {entrypoint:?} cannot be split into words"))?;
    }
    for pair in &args.metadata {
        let (key, value) = pair
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .with_context(|| format!("--metadata {pair:?} is not KEY=VALUE"))?;
        config.metadata.insert(key.to_owned(), value.to_owned());
    }
    config.services = port_services(&args.ports)?;
    let autostop = match args.autostop.as_deref() {
        None | Some("off" | "false") => None,
        Some("stop" | "true") => Some(Autostop::Stop),
        Some("suspend") => Some(Autostop::Suspend),
        Some(other) => bail!("--autostop {other:?}: use stop, suspend or off"),
    };
    for service in &mut config.services {
        service.autostop = autostop.or(Some(Autostop::Off));
        service.autostart = Some(args.autostart.unwrap_or(true));
    }
    if config.services.is_empty() && (autostop.is_some() || args.autostart == Some(false)) {
        bail!("--autostop and --autostart apply to services: give the machine one with --port");
    }
    config.auto_destroy = args.rm;
    config.schedule = args.schedule.clone();
    config.standbys = args.standby_for.clone();
    if args.vm_size.is_some() || args.memory.is_some() || args.cpus.is_some() {
        let size = args
            .vm_size
            .as_deref()
            .unwrap_or(aloft_types::machine::DEFAULT_GUEST_PRESET);
        let mut guest = MachineGuest::preset(size).with_context(|| {
            format!("--vm-size {size:?} is not a size: see `aloft platform vm-sizes`")
        })?;
        if let Some(memory) = args.memory {
            guest.memory_mb = memory;
        }
        if let Some(cpus) = args.cpus {
            guest.cpus = cpus;
        }
        config.guest = Some(guest);
    }
    // A standby waits stopped until the host of a machine it stands by for is lost.
    let standby = !config.standbys.is_empty();
    let request = MachineRequest {
        region: args.region,
        name: args.name,
        skip_launch: standby,
        ..MachineRequest::new(config)
    };
    let machine = client.create_machine(app, &request).await?;
    if !args.detach && !standby {
        return running(client, app, &machine.id).await;
    }
    Ok(machine)
}

/// How long a started machine is watched for an exit before `machine run` calls it
/// started (flyctl's smoke checks).
const SMOKE_CHECK: Duration = Duration::from_secs(10);
/// How many of a failed machine's last log lines are shown.
const LINES_SHOWN: usize = 20;

/// Waits until a new machine is started and has kept running for [`SMOKE_CHECK`]; fails
/// at once, with the reason, when it cannot be launched (an image that cannot be pulled,
/// say) or exits.
pub(super) async fn running(
    client: &Client,
    app: &str,
    id: &str,
) -> anyhow::Result<MachineResponse> {
    let deadline = Instant::now() + super::START_TIMEOUT;
    let mut started: Option<Instant> = None;
    loop {
        let machine = client.machine(app, id).await?;
        if machine.state == MachineState::Failed.as_str() {
            let reason = machine
                .events
                .iter()
                .filter(|e| e.kind == "launch" && e.status == "failed")
                .max_by_key(|e| e.timestamp)
                .and_then(|e| e.request.get("error")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| "no reason recorded".to_owned());
            bail!(
                "machine {id} failed to launch: {reason}{}",
                last_lines(client, app, id).await
            );
        }
        if let Some(exit) = machine
            .events
            .iter()
            .filter(|e| e.kind == "exit")
            .filter(|e| e.request.pointer("/exit_event/requested_stop") != Some(&true.into()))
            .max_by_key(|e| e.timestamp)
        {
            let code = exit
                .request
                .pointer("/exit_event/exit_code")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(-1);
            let crashing = if exit.status == "restarting" {
                "; the app appears to be crashing"
            } else {
                ""
            };
            bail!(
                "machine {id} exited with code {code} right after it started{crashing}{}\nSee `aloft machine status {id} -a {app}` and `aloft logs -a {app} --machine {id}`",
                last_lines(client, app, id).await
            );
        }
        if machine.state == MachineState::Started.as_str() {
            let since = *started.get_or_insert_with(Instant::now);
            if since.elapsed() >= SMOKE_CHECK {
                return Ok(machine);
            }
        } else if Instant::now() >= deadline {
            bail!(
                "machine {id} is {} and did not start within {} seconds",
                machine.state,
                super::START_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A machine's last log lines, as text to append to a message (empty when it has none).
pub(super) async fn last_lines(client: &Client, app: &str, id: &str) -> String {
    let request = aloft_client::LogsRequest {
        machine: Some(id.to_owned()),
        limit: Some(LINES_SHOWN),
        newest: Some(true),
        ..aloft_client::LogsRequest::default()
    };
    let Ok(page) = client.logs(app, &request).await else {
        return String::new();
    };
    let mut lines: Vec<_> = page
        .entries
        .into_iter()
        .filter(|l| l.stream != "platform")
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    lines.sort_by_key(|l| l.timestamp_ns);
    let mut text = format!("\nlast log lines of machine {id}:");
    for line in lines {
        text.push_str("\n  ");
        text.push_str(&line.message);
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code fails loudly")]

    use super::*;

    #[test]
    fn ports_are_read_as_flyctl_reads_them() {
        let web = port_service("80/tcp:http").unwrap();
        assert_eq!(
            (web.internal_port, web.ports[0].port, web.protocol),
            (80, Some(80), Protocol::Tcp)
        );
        assert_eq!(web.ports[0].handlers, [Handler::Http]);
        let tls = port_service("443:8080/tcp:tls:http").unwrap();
        assert_eq!((tls.internal_port, tls.ports[0].port), (8080, Some(443)));
        assert_eq!(tls.ports[0].handlers, [Handler::Tls, Handler::Http]);
        let raw = port_service("5432").unwrap();
        assert!(raw.ports[0].handlers.is_empty());
        assert_eq!(port_service("53/udp").unwrap().protocol, Protocol::Udp);
        for (wrong, says) in [
            ("http", "the port is not a number"),
            ("0/tcp", "the port is not a number"),
            ("80:x", "the machine's port"),
            ("80/sctp", "unknown protocol \"sctp\""),
            ("80/tcp:h3", "unknown handler \"h3\""),
            ("53/udp:http", "a udp port takes no handlers"),
        ] {
            let error = port_service(wrong).unwrap_err().to_string();
            assert!(
                error.contains(says) && error.contains(wrong),
                "{wrong}: {error}"
            );
        }
        // Two public ports of one machine port are one service.
        let services = port_services(&[
            "80:8080/tcp:http".to_owned(),
            "443:8080/tcp:tls:http".to_owned(),
        ])
        .unwrap();
        assert_eq!(services.len(), 1);
        assert_eq!(services[0].ports.len(), 2);
    }
}
