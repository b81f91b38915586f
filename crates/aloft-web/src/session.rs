//! Who is signed in: the API token, sealed (ChaCha20-Poly1305 under the dashboard's key)
//! into an HttpOnly cookie, so that the server keeps no session state and a restart signs
//! nobody out; and the CSRF tokens that every form carries.
//!
//! A form's CSRF token is an HMAC of the session cookie: a page of another origin can make
//! the browser send the cookie but cannot read the token. The sign-in form, which comes
//! before any session, uses a random value kept in a cookie of its own and repeated in the
//! form (double submit).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "aloft_session";
/// The sign-in form's double-submit cookie.
pub const SIGN_IN_COOKIE: &str = "aloft_sign_in";
/// How long a session lasts after sign-in.
pub const SESSION_SECONDS: u64 = 12 * 3600;

/// The dashboard's secret key: seals sessions and signs CSRF tokens.
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// Organizations one session may hold a token of (the cookie stays small).
pub const MOST_ORGANIZATIONS: usize = 8;

/// A token the session holds: one per organization signed in to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The API token the pages act with.
    pub token: String,
    /// The token's name, shown in the header.
    pub name: String,
    /// The token's kind (`operator`, `org`, `readonly`, ...).
    pub kind: String,
    /// The organization's slug.
    pub org: String,
}

/// What a session holds: a token per organization signed in to, and which one the pages
/// use now (the organization switcher changes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub tokens: Vec<Held>,
    pub current: usize,
    /// When the session began (Unix seconds).
    pub issued_at: u64,
}

impl Session {
    /// A session of one token.
    pub fn of(held: Held, issued_at: u64) -> Session {
        Session {
            tokens: vec![held],
            current: 0,
            issued_at,
        }
    }

    /// The token the pages use now.
    pub fn held(&self) -> Option<&Held> {
        self.tokens.get(self.current)
    }

    /// Adds a token (replacing the one it holds of the same organization) and makes it
    /// the current one; the oldest goes past [`MOST_ORGANIZATIONS`].
    pub fn add(&mut self, held: Held) {
        self.tokens.retain(|other| other.org != held.org);
        self.tokens.push(held);
        while self.tokens.len() > MOST_ORGANIZATIONS {
            self.tokens.remove(0);
        }
        self.current = self.tokens.len() - 1;
    }

    /// Makes `org`'s token the current one; false when the session holds none of it.
    pub fn switch(&mut self, org: &str) -> bool {
        match self.tokens.iter().position(|held| held.org == org) {
            Some(at) => {
                self.current = at;
                true
            }
            None => false,
        }
    }
}

impl Held {
    pub fn is_operator(&self) -> bool {
        self.kind == "operator"
    }

    /// Whether this token may change things (a read-only token sees no forms).
    pub fn can_change(&self) -> bool {
        self.kind != "readonly"
    }
}

impl SessionKey {
    pub fn new(bytes: [u8; 32]) -> SessionKey {
        SessionKey(bytes)
    }

    /// A fresh random key.
    pub fn generate() -> SessionKey {
        SessionKey(random())
    }

    /// The key kept at `path` (64 hex digits), made there (mode 0600) on the first start:
    /// sessions outlive a restart of the daemon.
    pub fn load_or_create(path: &std::path::Path) -> std::io::Result<SessionKey> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let text = text.trim();
                let bytes: Option<Vec<u8>> = (0..text.len())
                    .step_by(2)
                    .map(|i| {
                        text.get(i..i + 2)
                            .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    })
                    .collect();
                bytes
                    .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                    .map(SessionKey)
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("{} is not 64 hex digits", path.display()),
                        )
                    })
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = SessionKey::generate();
                let hex: String = key.0.iter().map(|b| format!("{b:02x}")).collect();
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)?;
                file.write_all(format!("{hex}\n").as_bytes())?;
                file.sync_all()?;
                Ok(key)
            }
            Err(error) => Err(error),
        }
    }

    /// The cookie value that carries `session`.
    pub fn seal(&self, session: &Session) -> String {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let nonce: [u8; 12] = random();
        let plain = serde_json::to_vec(session).unwrap_or_default();
        // Encryption with a valid key and nonce cannot fail.
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_slice())
            .unwrap_or_default();
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The session a cookie value carries, if it was sealed with this key and has not
    /// expired at `now` (Unix seconds).
    pub fn open(&self, cookie: &str, now: u64) -> Option<Session> {
        let bytes = URL_SAFE_NO_PAD.decode(cookie).ok()?;
        if bytes.len() < 12 {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(12);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let plain = cipher.decrypt(Nonce::from_slice(nonce), sealed).ok()?;
        let session: Session = serde_json::from_slice(&plain).ok()?;
        let expires = session.issued_at.checked_add(SESSION_SECONDS)?;
        let fresh = now < expires && session.issued_at <= now + 300;
        (fresh && session.held().is_some()).then_some(session)
    }

    /// The CSRF token of the session whose cookie value is `cookie`.
    pub fn csrf(&self, cookie: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| {
            unreachable!("HMAC takes a key of any length");
        });
        mac.update(b"aloft-csrf\0");
        mac.update(cookie.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Whether `token` is the CSRF token of `cookie`'s session (compared in constant time).
    pub fn csrf_holds(&self, cookie: &str, token: &str) -> bool {
        equal(self.csrf(cookie).as_bytes(), token.as_bytes())
    }
}

/// A fresh random value for the sign-in form's double submit.
pub fn sign_in_nonce() -> String {
    URL_SAFE_NO_PAD.encode(random::<16>())
}

/// Compares in time that depends only on the lengths.
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    #[allow(
        clippy::expect_used,
        reason = "the OS random source is always available on Linux"
    )]
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(org: &str) -> Held {
        Held {
            token: format!("aloft_secret_{org}"),
            name: "admin".to_owned(),
            kind: "operator".to_owned(),
            org: org.to_owned(),
        }
    }

    fn session(issued_at: u64) -> Session {
        Session::of(held("personal"), issued_at)
    }

    #[test]
    fn a_session_holds_a_token_per_organization_and_switches_between_them() {
        let mut session = session(1);
        session.add(held("globex"));
        assert_eq!(
            session.held().unwrap().org,
            "globex",
            "the added one is current"
        );
        assert!(session.switch("personal"));
        assert_eq!(session.held().unwrap().token, "aloft_secret_personal");
        assert!(!session.switch("initech"), "no token of it");
        assert_eq!(session.held().unwrap().org, "personal");
        // Signing in to an organization again replaces its token.
        let mut again = held("globex");
        again.token = "aloft_newer".to_owned();
        session.add(again);
        assert_eq!(session.tokens.len(), 2);
        assert_eq!(session.held().unwrap().token, "aloft_newer");
        for n in 0..10 {
            session.add(held(&format!("org{n}")));
        }
        assert_eq!(session.tokens.len(), MOST_ORGANIZATIONS);
        assert_eq!(session.held().unwrap().org, "org9");
        assert!(!session.switch("personal"), "the oldest went");
    }

    #[test]
    fn a_sealed_session_opens_with_its_key_only_and_until_it_expires() {
        let key = SessionKey::generate();
        let sealed = key.seal(&session(1_000));
        assert!(
            !sealed.contains("aloft_secret"),
            "the token is not readable"
        );
        assert_eq!(key.open(&sealed, 1_000), Some(session(1_000)));
        assert_eq!(
            key.open(&sealed, 1_000 + SESSION_SECONDS - 1),
            Some(session(1_000))
        );
        assert_eq!(key.open(&sealed, 1_000 + SESSION_SECONDS), None, "expired");
        assert_eq!(
            SessionKey::generate().open(&sealed, 1_000),
            None,
            "another key"
        );
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(key.open(&tampered, 1_000), None, "tampered");
        assert_eq!(key.open("", 1_000), None);
        assert_eq!(key.open("not base64!", 1_000), None);
    }

    #[test]
    fn the_key_file_is_made_once_then_read_and_a_bad_one_is_named() {
        let dir = std::env::temp_dir().join(format!("aloft-web-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("web-session.key");
        let _ = std::fs::remove_file(&path);
        let made = SessionKey::load_or_create(&path).unwrap();
        let read = SessionKey::load_or_create(&path).unwrap();
        assert_eq!(made.0, read.0);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "not hex\n").unwrap();
        let error = SessionKey::load_or_create(&path).unwrap_err();
        assert!(error.to_string().contains("web-session.key"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_csrf_token_belongs_to_one_session_and_one_key() {
        let key = SessionKey::generate();
        let (a, b) = (key.seal(&session(1)), key.seal(&session(1)));
        let token = key.csrf(&a);
        assert!(key.csrf_holds(&a, &token));
        assert!(!key.csrf_holds(&b, &token), "another session's cookie");
        assert!(
            !SessionKey::generate().csrf_holds(&a, &token),
            "another key"
        );
        assert!(!key.csrf_holds(&a, ""));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let header = "aloft_session_old=1; aloft_session=abc; other=x=y";
        assert_eq!(cookie(header, "aloft_session"), Some("abc"));
        assert_eq!(cookie(header, "other"), Some("x=y"));
        assert_eq!(cookie(header, "missing"), None);
    }
}
