//! One module per command group.

pub(crate) mod apps;
pub(crate) mod auth;
pub(crate) mod certs;
pub(crate) mod checks;
pub(crate) mod config;
pub(crate) mod console;
pub(crate) mod deploy;
pub(crate) mod dig;
pub(crate) mod ips;
pub(crate) mod launch;
pub(crate) mod logs;
pub(crate) mod machine;
pub(crate) mod orgs;
pub(crate) mod proxy;
pub(crate) mod scale;
pub(crate) mod secrets;
pub(crate) mod ssh;
pub(crate) mod status;
pub(crate) mod volumes;

use crate::Failure;
use crate::output::Output;

pub(crate) fn version(json: bool, out: &mut Output) -> Result<(), Failure> {
    let version = env!("CARGO_PKG_VERSION");
    if json {
        out.data(&serde_json::json!({ "version": version }).to_string());
    } else {
        out.data(&format!("aloft {version}"));
    }
    Ok(())
}
