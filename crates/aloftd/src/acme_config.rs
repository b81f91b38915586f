//! `[acme]` of aloftd's configuration: where `aloft certs add` gets certificates.

use std::net::SocketAddr;
use std::path::PathBuf;

use aloft_types::catalog::AcmeChallengeKind;
use serde::Deserialize;

/// `[acme]`: the ACME directory certificates come from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// The directory's URL (`https://`); Let's Encrypt's by default; `""` turns ACME off
    /// (`certificates/acme` then answers 503).
    pub directory: String,
    /// An address the directory may write to about the account (expiry, policy).
    pub email: Option<String>,
    /// A PEM file with the root certificate the directory's HTTPS is checked against,
    /// for a private or test directory (such as Pebble's); default: the public roots.
    pub ca_file: Option<PathBuf>,
    /// DNS servers (`address:port`) asked whether a hostname points at its app; default:
    /// the system's (`/etc/resolv.conf`).
    pub resolvers: Vec<SocketAddr>,
    /// The challenges answered, preferred first: `tls-alpn-01`, `http-01`.
    pub challenges: Vec<String>,
    /// Days before its expiry a certificate is renewed: 1 to 3650 (a value past the
    /// certificates' lifetime renews at every pass, which tests use).
    pub renew_before_days: u32,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            directory: aloft_acme::LETS_ENCRYPT.to_owned(),
            email: None,
            ca_file: None,
            resolvers: Vec::new(),
            challenges: vec!["tls-alpn-01".to_owned(), "http-01".to_owned()],
            renew_before_days: 30,
        }
    }
}

impl AcmeConfig {
    /// The first value out of range, as (key, why).
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if !self.directory.is_empty() && !self.directory.starts_with("https://") {
            return Err((
                "acme.directory",
                format!(
                    "{:?} is not an https:// URL (ACME directories speak HTTPS; \"\" turns ACME off)",
                    self.directory
                ),
            ));
        }
        if let Some(email) = &self.email
            && (!email.contains('@') || email.contains(char::is_whitespace))
        {
            return Err(("acme.email", format!("{email:?} is not an email address")));
        }
        if let Some(file) = &self.ca_file
            && !file.is_file()
        {
            return Err((
                "acme.ca_file",
                format!("{} is not a readable file", file.display()),
            ));
        }
        self.kinds()
            .map_err(|message| ("acme.challenges", message))?;
        if !(1..=3650).contains(&self.renew_before_days) {
            return Err((
                "acme.renew_before_days",
                format!("{} is outside 1 to 3650", self.renew_before_days),
            ));
        }
        Ok(())
    }

    fn kinds(&self) -> Result<Vec<AcmeChallengeKind>, String> {
        if self.challenges.is_empty() {
            return Err("name at least one of \"tls-alpn-01\" and \"http-01\"".to_owned());
        }
        self.challenges.iter().map(|c| c.parse()).collect()
    }

    /// The control plane's settings (`None`: ACME is off).
    pub(crate) fn settings(&self) -> Option<aloft_control::AcmeSettings> {
        if self.directory.is_empty() {
            return None;
        }
        Some(aloft_control::AcmeSettings {
            directory: aloft_acme::Directory {
                url: self.directory.clone(),
                root: self.ca_file.clone(),
                contact: self
                    .email
                    .iter()
                    .map(|email| format!("mailto:{email}"))
                    .collect(),
            },
            resolvers: self.resolvers.clone(),
            challenges: self.kinds().unwrap_or_default(),
            renew_before: std::time::Duration::from_secs(
                u64::from(self.renew_before_days) * 86_400,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_acme_settings_name_their_key() {
        assert_eq!(AcmeConfig::default().check(), Ok(()));
        let plain = AcmeConfig {
            directory: "http://ca.example/dir".to_owned(),
            ..AcmeConfig::default()
        };
        assert_eq!(plain.check().unwrap_err().0, "acme.directory");
        let dns = AcmeConfig {
            challenges: vec!["dns-01".to_owned()],
            ..AcmeConfig::default()
        };
        let (key, why) = dns.check().unwrap_err();
        assert_eq!(key, "acme.challenges");
        assert!(why.contains("dns-01"), "{why}");
        let never = AcmeConfig {
            renew_before_days: 0,
            ..AcmeConfig::default()
        };
        assert_eq!(never.check().unwrap_err().0, "acme.renew_before_days");
        let off = AcmeConfig {
            directory: String::new(),
            ..AcmeConfig::default()
        };
        assert!(off.settings().is_none());
        let on = AcmeConfig {
            email: Some("ops@example.com".to_owned()),
            ..AcmeConfig::default()
        };
        let settings = on.settings().unwrap();
        assert_eq!(settings.directory.contact, ["mailto:ops@example.com"]);
        assert_eq!(
            settings.challenges,
            [AcmeChallengeKind::TlsAlpn01, AcmeChallengeKind::Http01]
        );
    }
}
