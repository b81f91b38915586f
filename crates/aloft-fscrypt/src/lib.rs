//! Encryption at rest with Linux's filesystem encryption (fscrypt, v2 policies), as ext4
//! has it: a 64-byte master key is added to a mounted filesystem's own keyring
//! ([`add_key`]), and an empty directory is given a policy that names the key
//! ([`set_policy`]); every file made under it then has its contents (AES-256-XTS) and
//! name (AES-256-CTS) encrypted on disk with a key derived from the master key and the
//! file's nonce. The key lives in the kernel only, for as long as the filesystem is
//! mounted: unmounted, what the disk holds is ciphertext.
//!
//! The filesystem needs ext4's `encrypt` feature (`mkfs.ext4 -O encrypt`), and the
//! kernel ext4 encryption ([`supported`]). A filesystem's root directory cannot be
//! encrypted: the policy goes on a directory inside it.

use std::os::fd::AsRawFd as _;
use std::path::Path;

/// A master key's length in bytes (`FSCRYPT_MAX_KEY_SIZE`; AES-256-XTS takes 64).
pub const KEY_LEN: usize = 64;

/// What the kernel calls a key added to a filesystem: a hash of it, which a policy
/// names. Not secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identifier(pub [u8; 16]);

/// Whether this kernel's ext4 can encrypt (`/sys/fs/ext4/features/encryption`).
pub fn supported() -> bool {
    Path::new("/sys/fs/ext4/features/encryption").exists()
}

// The kernel's numbers (include/uapi/linux/fscrypt.h).
/// `FS_IOC_SET_ENCRYPTION_POLICY`: `_IOR('f', 19, struct fscrypt_policy_v1)`.
const SET_POLICY: u32 = 0x800C_6613;
/// `FS_IOC_ADD_ENCRYPTION_KEY`: `_IOWR('f', 23, struct fscrypt_add_key_arg)`.
const ADD_KEY: u32 = 0xC050_6617;
const KEY_SPEC_TYPE_IDENTIFIER: u32 = 2;
const POLICY_V2: u8 = 2;
const MODE_AES_256_XTS: u8 = 1;
const MODE_AES_256_CTS: u8 = 4;
/// `FSCRYPT_POLICY_FLAGS_PAD_16`: file names padded to 16 bytes (hides their lengths).
const PAD_16: u8 = 0x02;

/// `struct fscrypt_add_key_arg` followed by the raw key (its flexible array member).
#[repr(C)]
struct AddKeyArg {
    spec_type: u32,
    spec_reserved: u32,
    /// The key specifier's union: the identifier comes back in its first 16 bytes.
    spec: [u8; 32],
    raw_size: u32,
    key_id: u32,
    reserved: [u32; 8],
    raw: [u8; KEY_LEN],
}

/// `struct fscrypt_policy_v2`.
#[repr(C)]
struct PolicyV2 {
    version: u8,
    contents_mode: u8,
    filenames_mode: u8,
    flags: u8,
    /// `log2_data_unit_size` and three reserved bytes: 0 is the filesystem's block size.
    reserved: [u8; 4],
    identifier: [u8; 16],
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
        .map_err(|error| std::io::Error::new(error.kind(), format!("{}: {error}", path.display())))
}

fn failed(what: &str, path: &Path) -> std::io::Error {
    let error = std::io::Error::last_os_error();
    let hint = match error.raw_os_error() {
        Some(libc::EOPNOTSUPP) => {
            " (the filesystem was made without ext4's encrypt feature, or the kernel lacks it)"
        }
        Some(libc::EEXIST) => " (the directory is encrypted with another key)",
        Some(libc::ENOTEMPTY) => " (the directory already holds unencrypted files)",
        _ => "",
    };
    std::io::Error::new(
        error.kind(),
        format!("{what} {}: {error}{hint}", path.display()),
    )
}

/// Adds `key` to the keyring of the filesystem mounted at (or holding) `path`; its
/// identifier. Adding a key that is there already is fine.
pub fn add_key(path: &Path, key: &[u8; KEY_LEN]) -> std::io::Result<Identifier> {
    let dir = open(path)?;
    let mut arg = Box::new(AddKeyArg {
        spec_type: KEY_SPEC_TYPE_IDENTIFIER,
        spec_reserved: 0,
        spec: [0; 32],
        raw_size: KEY_LEN as u32,
        key_id: 0,
        reserved: [0; 8],
        raw: *key,
    });
    let arg_ptr: *mut AddKeyArg = &mut *arg;
    // SAFETY: `dir` is an open file descriptor; `arg_ptr` points at a live, writable
    // `fscrypt_add_key_arg` laid out as the kernel's (`repr(C)`, 80 bytes) followed by
    // the `raw_size` bytes of key it reads; the kernel writes only the identifier back
    // into the specifier, inside the struct.
    #[allow(unsafe_code)]
    let status = unsafe { libc::ioctl(dir.as_raw_fd(), ADD_KEY as _, arg_ptr) };
    let identifier = arg.spec[..16].try_into().unwrap_or([0; 16]);
    // The key does not outlive the call in this process's memory.
    arg.raw.fill(0);
    std::hint::black_box(&arg.raw);
    if status != 0 {
        return Err(failed(
            "adding an encryption key to the filesystem of",
            path,
        ));
    }
    Ok(Identifier(identifier))
}

/// Encrypts the empty directory `dir` with the key `identifier` names (added to its
/// filesystem first, [`add_key`]): what is made under it is encrypted. A directory that
/// has this policy already is fine; one with another key's, or with unencrypted files in
/// it, is refused.
pub fn set_policy(dir: &Path, identifier: &Identifier) -> std::io::Result<()> {
    let file = open(dir)?;
    let policy = PolicyV2 {
        version: POLICY_V2,
        contents_mode: MODE_AES_256_XTS,
        filenames_mode: MODE_AES_256_CTS,
        flags: PAD_16,
        reserved: [0; 4],
        identifier: identifier.0,
    };
    let policy_ptr: *const PolicyV2 = &policy;
    // SAFETY: `file` is an open file descriptor of a directory; `policy_ptr` points at a
    // live `fscrypt_policy_v2` (`repr(C)`, 24 bytes) that the kernel only reads (its
    // `version` tells it the size).
    #[allow(unsafe_code)]
    let status = unsafe { libc::ioctl(file.as_raw_fd(), SET_POLICY as _, policy_ptr) };
    if status != 0 {
        return Err(failed("encrypting the directory", dir));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_structs_are_the_kernels_size() {
        // The request numbers carry the sizes the kernel checks against.
        assert_eq!(std::mem::size_of::<AddKeyArg>() - KEY_LEN, 80);
        assert_eq!((ADD_KEY >> 16) & 0x3fff, 80);
        assert_eq!(std::mem::size_of::<PolicyV2>(), 24);
        // `FS_IOC_SET_ENCRYPTION_POLICY` is numbered with the v1 struct's size.
        assert_eq!((SET_POLICY >> 16) & 0x3fff, 12);
    }
}
