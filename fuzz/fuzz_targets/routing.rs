//! Any text as a `Host` header, a TLS server name, or a `fly-replay` header: nothing may
//! panic, a host names an app only under the apps domain, and a certificate is chosen only
//! for a name it covers.

#![no_main]

use std::sync::{Arc, OnceLock};

use aloft_proxy::app_of_host;
use aloft_proxy::tls::{Certificates, LocalCa};
use libfuzzer_sys::fuzz_target;

const DOMAIN: &str = "aloft.localhost";

fn certificates() -> &'static Certificates {
    static CERTIFICATES: OnceLock<Certificates> = OnceLock::new();
    CERTIFICATES.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("aloft-fuzz-ca-{}", std::process::id()));
        let ca = LocalCa::load_or_create(&dir).expect("a CA");
        let certificates = Certificates::default();
        let wildcard: Arc<_> = ca.issue(&[format!("*.{DOMAIN}")]).expect("a certificate");
        certificates.insert(&format!("*.{DOMAIN}"), wildcard);
        let exact = ca.issue(&["exact.example.com".to_owned()]).expect("a certificate");
        certificates.insert("exact.example.com", exact);
        certificates
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(app) = app_of_host(text, DOMAIN) {
        assert!(!app.is_empty() && !app.contains('.'));
        assert!(text.to_ascii_lowercase().contains(&format!(".{DOMAIN}")));
    }
    if certificates().find(text).is_some() {
        let name = text.trim_end_matches('.').to_ascii_lowercase();
        assert!(name == "exact.example.com" || name.ends_with(&format!(".{DOMAIN}")), "{text}");
    }
    let _ = aloft_proxy::replay::parse_header(text);
    let _ = aloft_proxy::replay::parse_json(data);
});
