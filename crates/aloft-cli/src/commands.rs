//! One module per command group.

pub(crate) mod apps;
pub(crate) mod auth;
pub(crate) mod certs;
pub(crate) mod checks;
pub(crate) mod config;
pub(crate) mod config_env;
pub(crate) mod console;
pub(crate) mod deploy;
pub(crate) mod deploy_scope;
pub(crate) mod dig;
pub(crate) mod doctor;
pub(crate) mod ips;
pub(crate) mod launch;
pub(crate) mod logs;
pub(crate) mod machine;
pub(crate) mod orgs;
pub(crate) mod platform;
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

#[cfg(test)]
mod tests {
    use aloft_client::ClientError;

    /// What the CLI prints for the API's errors (`error: ` and then this): each says what
    /// went wrong and, where the message cannot, what to do next.
    #[test]
    fn api_errors_say_what_to_do_next() {
        let api = |status: u16, message: &str| ClientError::Api {
            status,
            message: message.to_owned(),
        };
        let errors = [
            ClientError::Unreachable {
                url: "http://127.0.0.1:4280".to_owned(),
                cause: "Connection refused (os error 111)".to_owned(),
            },
            api(401, "missing or invalid token"),
            api(403, "this token may not change app web"),
            api(404, "app nope not found"),
            api(
                409,
                "deployment d1 of app web is still running; wait for it to end",
            ),
            api(
                422,
                "release v2 of app web is failed: only a release that was deployed completely can be rolled back to",
            ),
            api(500, "internal error"),
        ];
        let text: Vec<String> = errors
            .into_iter()
            .map(|e| format!("{:#}", anyhow::Error::from(e).context("listing machines")))
            .collect();
        insta::assert_snapshot!(text.join("\n"));
    }
}
