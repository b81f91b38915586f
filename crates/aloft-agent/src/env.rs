//! The environment every machine gets, Fly's names and their `ALOFT_*` twins.

/// The app's name.
pub const FLY_APP_NAME: &str = "FLY_APP_NAME";
/// The machine's id.
pub const FLY_MACHINE_ID: &str = "FLY_MACHINE_ID";
/// The machine's id again (Fly's older name).
pub const FLY_ALLOC_ID: &str = "FLY_ALLOC_ID";
/// The region the machine runs in.
pub const FLY_REGION: &str = "FLY_REGION";
/// The image the machine runs.
pub const FLY_IMAGE_REF: &str = "FLY_IMAGE_REF";
/// The machine's config version (its instance id).
pub const FLY_MACHINE_VERSION: &str = "FLY_MACHINE_VERSION";
/// The machine's process group.
pub const FLY_PROCESS_GROUP: &str = "FLY_PROCESS_GROUP";
/// The machine's memory, in MB.
pub const FLY_VM_MEMORY_MB: &str = "FLY_VM_MEMORY_MB";
/// The machine's private (6PN) address, once it has one.
pub const FLY_PRIVATE_IP: &str = "FLY_PRIVATE_IP";
/// The app's primary region (from fly.toml's `primary_region`).
pub const PRIMARY_REGION: &str = "PRIMARY_REGION";

/// Each `FLY_*` variable is also set as `ALOFT_*` (`FLY_REGION` → `ALOFT_REGION`).
pub fn aloft_twin(fly_name: &str) -> Option<String> {
    fly_name
        .strip_prefix("FLY_")
        .map(|rest| format!("ALOFT_{rest}"))
}
