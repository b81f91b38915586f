//! Placing machines and volumes: what the store knows of the region's hosts, handed to
//! [`crate::placement::choose`], which decides.

use aloft_store::Desired;
use aloft_types::machine::MachineConfig;
use aloft_types::{AppId, HostId};

use crate::placement::{Candidate, Need, choose, group_of};
use crate::{ApiError, Inner};

/// What is being placed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Placing<'a> {
    /// A machine of `app` with this config: it spreads over the hosts with its group.
    Machine {
        app: &'a AppId,
        config: &'a MachineConfig,
    },
    /// A volume of `app`: the app's volumes spread over the hosts.
    Volume { app: &'a AppId },
}

/// A host in `region` for what is being placed, or a 412 naming the region and what is
/// short (no host, none up, no room).
pub(crate) async fn place(
    inner: &Inner,
    region: &str,
    placing: Placing<'_>,
) -> Result<HostId, ApiError> {
    let records = inner.store.host_records().await?;
    let volumes = match placing {
        Placing::Volume { app } => inner.store.list_volumes(app).await?,
        Placing::Machine { .. } => Vec::new(),
    };
    let need = match placing {
        Placing::Machine { config, .. } => Need::of(config.guest.as_ref()),
        Placing::Volume { .. } => Need::NOTHING,
    };
    let mut candidates = Vec::with_capacity(records.len());
    for record in records {
        let host = record.host.id.clone();
        let mut used = Need::NOTHING;
        let mut siblings = 0;
        // Only the region's hosts are weighed; the others only name their regions.
        if record.host.region == region {
            for machine in inner.store.machines_on_host(&host).await? {
                if machine.desired == Desired::Destroyed {
                    continue;
                }
                used = used.plus(Need::of(machine.config.guest.as_ref()));
                if let Placing::Machine { app, config } = placing
                    && &machine.app_id == app
                    && group_of(&machine.config) == group_of(config)
                {
                    siblings += 1;
                }
            }
            if let Placing::Volume { .. } = placing {
                siblings = volumes
                    .iter()
                    .filter(|v| v.host_id.as_ref() == Some(&host))
                    .count();
            }
        }
        candidates.push(Candidate {
            id: host,
            state: record.state(),
            region: record.host.region,
            cpus: record.host.cpus,
            memory_mb: record.host.memory_mb,
            used,
            siblings,
        });
    }
    choose(region, need, &candidates).map_err(|refusal| {
        tracing::info!(region, %refusal, "a placement was refused");
        ApiError::PreconditionFailed(refusal.to_string())
    })
}
