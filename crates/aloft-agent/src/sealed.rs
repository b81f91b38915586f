//! Snapshot archives of encrypted volumes, encrypted with them: what a volume keeps
//! encrypted on disk is not written out in the clear by its snapshot.
//!
//! The format: [`MAGIC`], a 32-byte random salt and a 7-byte random nonce, then the
//! archive in chunks of [`CHUNK`] bytes, each sealed with ChaCha20-Poly1305 in the STREAM
//! construction (a counter and a last-chunk flag in each chunk's nonce, so chunks cannot
//! be reordered, dropped or cut off at the end unnoticed). The chunk key is derived with
//! HKDF-SHA256 from the volume's key and the salt, so no two archives share one.

use std::io::{Read, Write};

use aloft_agent_api::VolumeKey;
use chacha20poly1305::aead::generic_array::GenericArray;
use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit as _};

/// What an encrypted archive starts with.
pub(crate) const MAGIC: &[u8; 16] = b"aloft-sealed-v1\n";
/// Plaintext bytes per chunk.
const CHUNK: usize = 64 * 1024;
/// Poly1305's tag, added to every chunk.
const TAG: usize = 16;
const SALT: usize = 32;
const NONCE: usize = 7;
const INFO: &[u8] = b"aloft volume snapshot archive v1";

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

fn cipher(key: &VolumeKey, salt: &[u8]) -> std::io::Result<ChaCha20Poly1305> {
    let mut derived = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), key.as_bytes())
        .expand(INFO, &mut derived)
        .map_err(|_| invalid("deriving the archive key"))?;
    let cipher = ChaCha20Poly1305::new(GenericArray::from_slice(&derived));
    derived.fill(0);
    Ok(cipher)
}

/// A writer that encrypts what it is given; [`Sealing::finish`] seals the last chunk and
/// hands the inner writer back.
pub(crate) struct Sealing<W: Write> {
    inner: W,
    stream: Option<EncryptorBE32<ChaCha20Poly1305>>,
    pending: Vec<u8>,
}

impl<W: Write> std::fmt::Debug for Sealing<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealing")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<W: Write> Sealing<W> {
    /// Writes the header to `inner`.
    pub(crate) fn new(mut inner: W, key: &VolumeKey) -> std::io::Result<Sealing<W>> {
        let salt: [u8; SALT] = random()?;
        let nonce: [u8; NONCE] = random()?;
        inner.write_all(MAGIC)?;
        inner.write_all(&salt)?;
        inner.write_all(&nonce)?;
        let stream =
            EncryptorBE32::from_aead(cipher(key, &salt)?, GenericArray::from_slice(&nonce));
        Ok(Sealing {
            inner,
            stream: Some(stream),
            pending: Vec::with_capacity(CHUNK + 1),
        })
    }

    /// Seals what is left as the last chunk; the inner writer.
    pub(crate) fn finish(mut self) -> std::io::Result<W> {
        let stream = self
            .stream
            .take()
            .ok_or_else(|| invalid("the archive was sealed already"))?;
        let last = stream
            .encrypt_last(self.pending.as_slice())
            .map_err(|_| invalid("sealing the archive's last chunk"))?;
        self.inner.write_all(&last)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Sealing<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK + 1 - self.pending.len();
        let taken = bytes.len().min(room);
        self.pending.extend_from_slice(&bytes[..taken]);
        // A chunk is sealed only once a byte follows it: the last chunk is sealed as the
        // last by `finish`, whatever its length.
        if self.pending.len() > CHUNK {
            let stream = self
                .stream
                .as_mut()
                .ok_or_else(|| invalid("the archive was sealed already"))?;
            let sealed = stream
                .encrypt_next(&self.pending[..CHUNK])
                .map_err(|_| invalid("sealing an archive chunk"))?;
            self.inner.write_all(&sealed)?;
            self.pending.drain(..CHUNK);
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader of what [`Sealing`] wrote: the plaintext, or an error for anything cut,
/// changed or sealed with another key.
pub(crate) struct Unsealing<R: Read> {
    inner: R,
    stream: Option<DecryptorBE32<ChaCha20Poly1305>>,
    /// Decrypted bytes not read yet.
    plain: Vec<u8>,
    at: usize,
    /// Sealed bytes read ahead (one past a chunk tells that it is not the last).
    sealed: Vec<u8>,
}

impl<R: Read> std::fmt::Debug for Unsealing<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsealing")
            .field("done", &self.stream.is_none())
            .finish_non_exhaustive()
    }
}

impl<R: Read> Unsealing<R> {
    /// Reads the header from `inner` (its [`MAGIC`] already read by the caller).
    pub(crate) fn new(mut inner: R, key: &VolumeKey) -> std::io::Result<Unsealing<R>> {
        let mut salt = [0u8; SALT];
        let mut nonce = [0u8; NONCE];
        inner.read_exact(&mut salt)?;
        inner.read_exact(&mut nonce)?;
        let stream =
            DecryptorBE32::from_aead(cipher(key, &salt)?, GenericArray::from_slice(&nonce));
        Ok(Unsealing {
            inner,
            stream: Some(stream),
            plain: Vec::new(),
            at: 0,
            sealed: Vec::with_capacity(CHUNK + TAG + 1),
        })
    }

    /// Decrypts the next chunk into `plain`; false at the end.
    fn next_chunk(&mut self) -> std::io::Result<bool> {
        if self.stream.is_none() {
            return Ok(false);
        }
        while self.sealed.len() < CHUNK + TAG + 1 {
            let mut buffer = [0u8; 8192];
            let want = (CHUNK + TAG + 1 - self.sealed.len()).min(buffer.len());
            let n = self.inner.read(&mut buffer[..want])?;
            if n == 0 {
                break;
            }
            self.sealed.extend_from_slice(&buffer[..n]);
        }
        let refused = || invalid("the snapshot archive is damaged or sealed with another key");
        if self.sealed.len() > CHUNK + TAG {
            let stream = self.stream.as_mut().ok_or_else(refused)?;
            self.plain = stream
                .decrypt_next(&self.sealed[..CHUNK + TAG])
                .map_err(|_| refused())?;
            self.sealed.drain(..CHUNK + TAG);
        } else {
            let stream = self.stream.take().ok_or_else(refused)?;
            self.plain = stream
                .decrypt_last(self.sealed.as_slice())
                .map_err(|_| refused())?;
            self.sealed.clear();
        }
        self.at = 0;
        Ok(true)
    }
}

impl<R: Read> Read for Unsealing<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.plain.len() {
            if !self.next_chunk()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.plain.len() - self.at);
        out[..n].copy_from_slice(&self.plain[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn random<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> VolumeKey {
        VolumeKey::from_bytes([byte; VolumeKey::LEN])
    }

    fn seal(plain: &[u8], key: &VolumeKey) -> Vec<u8> {
        let mut sealing = Sealing::new(Vec::new(), key).unwrap();
        // In uneven pieces, as tar writes.
        for piece in plain.chunks(1000) {
            sealing.write_all(piece).unwrap();
        }
        sealing.finish().unwrap()
    }

    fn unseal(sealed: &[u8], key: &VolumeKey) -> std::io::Result<Vec<u8>> {
        let body = sealed
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| invalid("no magic"))?;
        let mut out = Vec::new();
        Unsealing::new(body, key)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn an_archive_round_trips_at_every_chunk_boundary_and_hides_its_text() {
        let marker = b"plaintext-marker-";
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 17] {
            let plain: Vec<u8> = marker.iter().copied().cycle().take(len).collect();
            let sealed = seal(&plain, &key(1));
            assert_eq!(unseal(&sealed, &key(1)).unwrap(), plain, "{len} bytes");
            if len >= marker.len() {
                // The positive control: the marker is in the plaintext.
                assert!(plain.windows(marker.len()).any(|w| w == marker));
                assert!(
                    !sealed.windows(marker.len()).any(|w| w == marker),
                    "{len} bytes: the sealed archive shows its text"
                );
            }
        }
    }

    #[test]
    fn a_cut_changed_or_wrongly_keyed_archive_is_refused() {
        let plain = vec![7u8; 2 * CHUNK + 100];
        let sealed = seal(&plain, &key(1));
        assert!(unseal(&sealed, &key(2)).is_err(), "another key");
        let header = MAGIC.len() + SALT + NONCE;
        // Cut at a chunk boundary: the last chunk is missing, which the flag tells.
        let cut = &sealed[..header + CHUNK + TAG];
        assert!(unseal(cut, &key(1)).is_err(), "cut at a chunk's end");
        assert!(
            unseal(&sealed[..sealed.len() - 1], &key(1)).is_err(),
            "cut short"
        );
        let mut changed = sealed.clone();
        changed[header + 5] ^= 1;
        assert!(unseal(&changed, &key(1)).is_err(), "a changed byte");
        // Two archives of the same files differ (their salts do).
        assert_ne!(seal(&plain, &key(1)), sealed);
    }
}
