//! `aloft checks list`: the latest result of every health check of an app's machines.

use clap::Subcommand;

use crate::Failure;
use crate::api::client;
use crate::output::Output;
use crate::table;

#[derive(Debug, Subcommand)]
pub enum ChecksCommand {
    /// Every check of the app's machines: name, status, machine, last update and output.
    List {
        /// Only this machine's checks.
        #[arg(long)]
        machine: Option<String>,
    },
}

/// The first line of a check's output, shortened for a table cell.
fn one_line(output: &str) -> String {
    const WIDTH: usize = 80;
    let line = output.lines().next().unwrap_or_default();
    if line.chars().count() > WIDTH {
        let cut: String = line.chars().take(WIDTH - 1).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

pub(crate) async fn run(
    command: ChecksCommand,
    app: &str,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let ChecksCommand::List { machine } = command;
    let machines = client()?
        .list_machines(app)
        .await
        .map_err(anyhow::Error::from)?;
    if let Some(wanted) = &machine
        && !machines.iter().any(|m| &m.id == wanted)
    {
        return Err(anyhow::anyhow!("app {app} has no machine {wanted}").into());
    }
    let checks: Vec<_> = machines
        .iter()
        .filter(|m| machine.as_ref().is_none_or(|wanted| &m.id == wanted))
        .flat_map(|m| m.checks.iter().map(move |c| (m.id.as_str(), c)))
        .collect();
    if json {
        let list: Vec<serde_json::Value> = checks
            .iter()
            .map(|(machine, check)| {
                serde_json::json!({
                    "machine": machine,
                    "name": check.name,
                    "status": check.status,
                    "output": check.output,
                    "updated_at": check.updated_at,
                })
            })
            .collect();
        out.json(&list)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|(machine, check)| {
            vec![
                check.name.clone(),
                check.status.to_string(),
                (*machine).to_owned(),
                check.updated_at.clone(),
                one_line(&check.output),
            ]
        })
        .collect();
    out.data(&format!(
        "Health Checks for {app}\n{}",
        table::render(
            &["NAME", "STATUS", "MACHINE", "LAST UPDATED", "OUTPUT"],
            &rows
        )
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_cut_to_one_short_line() {
        assert_eq!(one_line("200 OK\nbody"), "200 OK");
        let long = "x".repeat(100);
        let cut = one_line(&long);
        assert_eq!(cut.chars().count(), 80);
        assert!(cut.ends_with('…'));
        assert_eq!(one_line(""), "");
    }
}
