//! The catalog: what every host needs to know about apps and machines to route and
//! resolve names (DNS now, the proxy later). The control plane publishes a new catalog on
//! every change; consumers swap it in whole.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};

use crate::machine::MachineService;
use crate::{CheckStatus, MachineState};

/// Everything, at one moment.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Catalog {
    /// Challenges the edge answers for ACME orders in flight.
    #[serde(default)]
    pub acme_challenges: Vec<AcmeChallenge>,
    pub apps: Vec<CatalogApp>,
    pub machines: Vec<CatalogMachine>,
}

/// An app and the private network it lives in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogApp {
    pub name: String,
    pub org_id: String,
    /// The network's number (the second and third groups of its 6PN addresses).
    pub network: u32,
    /// The app's dedicated IPv4 addresses: the proxy listens on them for its service ports
    /// other than the shared 80 and 443.
    pub ipv4: Vec<std::net::Ipv4Addr>,
    /// Hostnames the app answers at besides `<app>.<apps_domain>`.
    pub hostnames: Vec<CatalogHostname>,
}

/// A hostname of an app and where its certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogHostname {
    /// Lowercase; `*.example.com` covers one label.
    pub name: String,
    /// The certificate served (PEM chain and private key: imported, or issued by an ACME
    /// directory); `None`: the edge's local CA issues one.
    pub custom: Option<(String, String)>,
}

/// How an ACME directory asks for proof that the platform answers at a hostname
/// (RFC 8555 section 8.3, RFC 8737).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AcmeChallengeKind {
    /// The key authorization at `http://<host>/.well-known/acme-challenge/<token>`.
    #[serde(rename = "http-01")]
    Http01,
    /// A certificate carrying the key authorization's digest, offered to TLS clients that
    /// ask for the `acme-tls/1` protocol.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl AcmeChallengeKind {
    /// The name RFC 8555 and the configuration use.
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeChallengeKind::Http01 => "http-01",
            AcmeChallengeKind::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

impl std::str::FromStr for AcmeChallengeKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "http-01" => Ok(AcmeChallengeKind::Http01),
            "tls-alpn-01" => Ok(AcmeChallengeKind::TlsAlpn01),
            other => Err(format!(
                "{other:?} is not a challenge Aloft answers (\"tls-alpn-01\" or \"http-01\")"
            )),
        }
    }
}

/// A challenge the edge answers while an ACME order for `hostname` waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeChallenge {
    pub hostname: String,
    pub kind: AcmeChallengeKind,
    pub token: String,
    pub key_authorization: String,
}

/// A machine that is not destroyed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogMachine {
    pub id: String,
    pub app: String,
    pub region: String,
    pub state: MachineState,
    pub private_ip: Option<Ipv6Addr>,
    /// The `fly_process_group` metadata (`app` when unset).
    pub process_group: String,
    pub metadata: BTreeMap<String, String>,
    /// `dns.skip_registration`: the machine stays out of DNS.
    pub skip_registration: bool,
    pub cordoned: bool,
    pub services: Vec<MachineService>,
    /// The latest result of each of the current run's checks.
    pub checks: Vec<CatalogCheck>,
    /// `disable_machine_autostart`: requests never start this machine.
    pub autostart_disabled: bool,
    /// The app's primary region as the machine's env names it (`PRIMARY_REGION`).
    pub primary_region: Option<String>,
    /// `[[statics]]`: URL prefixes the edge answers from the machine's files.
    #[serde(default)]
    pub statics: Vec<crate::machine::Static>,
}

impl CatalogMachine {
    /// Whether the checks of service `index` (in `services`) all pass. A service without
    /// checks always does; one whose checks have no result yet does not.
    pub fn service_healthy(&self, index: usize) -> bool {
        let Some(service) = self.services.get(index) else {
            return false;
        };
        if service.checks.is_empty() {
            return true;
        }
        let mut results = self
            .checks
            .iter()
            .filter(|c| c.service == Some(index))
            .peekable();
        results.peek().is_some() && results.all(|c| c.status == CheckStatus::Passing)
    }
}

/// One check's latest status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogCheck {
    pub name: String,
    /// The index in the machine's `services` of the service the check belongs to; `None`
    /// for a top-level check, which never changes routing (Fly's rule).
    pub service: Option<usize>,
    pub status: CheckStatus,
}
