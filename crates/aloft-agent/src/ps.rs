//! A machine's processes as Fly's `ps` shows them, read from the host's `/proc` by the
//! host PIDs the engine reports for the container: the pid inside the machine (the last
//! of `NSpid`), start time and run time, command line, working directory, CPU time,
//! resident memory, and the TCP ports it listens on and UDP ports it has bound (its
//! socket inodes matched against its network namespace's `/proc/<pid>/net` tables).

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use aloft_types::api::{ListenSocket, ProcessStat};

/// The host PIDs of every process in the PID namespace of `main` (a container's main
/// process): the container's processes, those started by `exec` included.
pub(crate) fn pids_of(proc: &Path, main: u32) -> io::Result<Vec<u32>> {
    let namespace = std::fs::read_link(proc.join(main.to_string()).join("ns/pid"))?;
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(proc)? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if std::fs::read_link(proc.join(pid.to_string()).join("ns/pid"))
            .ok()
            .as_ref()
            == Some(&namespace)
        {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// Reads the processes `pids` (host PIDs) under `proc` (`/proc`); a process that ended
/// meanwhile is left out.
pub(crate) fn read(proc: &Path, pids: &[u32]) -> io::Result<Vec<ProcessStat>> {
    let ticks = clock_ticks();
    let boot = boot_time(proc)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let page = page_size();
    let mut processes = Vec::new();
    for &pid in pids {
        match one(proc, pid, ticks, boot, now, page) {
            Ok(process) => processes.push(process),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::debug!(pid, %error, "a process could not be read");
            }
        }
    }
    processes.sort_by_key(|p| p.pid);
    Ok(processes)
}

fn one(
    proc: &Path,
    pid: u32,
    ticks: u64,
    boot: u64,
    now: u64,
    page: u64,
) -> io::Result<ProcessStat> {
    let dir = proc.join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat"))?;
    let fields = stat_fields(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "an unreadable stat line"))?;
    // Fields after the command, numbered from `state` (field 3 of proc(5)) as 0.
    let field = |n: usize| {
        fields
            .get(n)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (utime, stime_ticks, starttime, rss_pages) = (field(11), field(12), field(19), field(21));
    let started = boot + starttime / ticks.max(1);
    let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
    let inner_pid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|p| p.parse().ok())
        .unwrap_or(i32::try_from(pid).unwrap_or(i32::MAX));
    let command = std::fs::read(dir.join("cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let directory = std::fs::read_link(dir.join("cwd"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    Ok(ProcessStat {
        pid: inner_pid,
        stime: started,
        rtime: now.saturating_sub(started),
        command,
        directory,
        cpu: (utime + stime_ticks) * 1000 / ticks.max(1),
        rss: rss_pages * page,
        listen_sockets: listening(&dir).unwrap_or_default(),
    })
}

/// The fields of a `stat` line after `(comm)` (which may hold spaces and parentheses).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after = stat.rfind(')')?;
    Some(stat[after + 1..].split_whitespace().collect())
}

/// The sockets the process holds that listen (TCP) or are bound (UDP).
fn listening(dir: &Path) -> io::Result<Vec<ListenSocket>> {
    let mut inodes = HashSet::new();
    for entry in std::fs::read_dir(dir.join("fd"))? {
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        if let Some(inode) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok())
        {
            inodes.insert(inode);
        }
    }
    let mut sockets = Vec::new();
    for (table, proto, v6) in [
        ("tcp", "tcp", false),
        ("tcp6", "tcp", true),
        ("udp", "udp", false),
        ("udp6", "udp", true),
    ] {
        let path: PathBuf = dir.join("net").join(table);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for entry in parse_table(&text, v6) {
            // TCP: LISTEN (0A); UDP: bound sockets are "closed" (07).
            let wanted = if proto == "tcp" { 0x0A } else { 0x07 };
            if entry.state == wanted && inodes.contains(&entry.inode) {
                let socket = ListenSocket {
                    proto: proto.to_owned(),
                    address: entry.address,
                };
                if !sockets.contains(&socket) {
                    sockets.push(socket);
                }
            }
        }
    }
    Ok(sockets)
}

struct TableEntry {
    address: String,
    state: u8,
    inode: u64,
}

/// The rows of a `/proc/net/{tcp,tcp6,udp,udp6}` table.
fn parse_table(text: &str, v6: bool) -> Vec<TableEntry> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            let (host, port) = columns.get(1)?.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let state = u8::from_str_radix(columns.get(3)?, 16).ok()?;
            let inode = columns.get(9)?.parse().ok()?;
            let address = if v6 {
                format!("[{}]:{port}", ipv6(host)?)
            } else {
                format!("{}:{port}", ipv4(host)?)
            };
            Some(TableEntry {
                address,
                state,
                inode,
            })
        })
        .collect()
}

/// An IPv4 address as the kernel prints it: one 32-bit word in host (little-endian) order.
fn ipv4(hex: &str) -> Option<Ipv4Addr> {
    let word = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(word.to_le_bytes()))
}

/// An IPv6 address as the kernel prints it: four 32-bit words, each in host order.
fn ipv6(hex: &str) -> Option<Ipv6Addr> {
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for word in 0..4 {
        let value = u32::from_str_radix(&hex[word * 8..word * 8 + 8], 16).ok()?;
        bytes[word * 4..word * 4 + 4].copy_from_slice(&value.to_le_bytes());
    }
    Some(Ipv6Addr::from(bytes))
}

fn boot_time(proc: &Path) -> io::Result<u64> {
    let stat = std::fs::read_to_string(proc.join("stat"))?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no btime in /proc/stat"))
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .unwrap_or(100)
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_tables_read_as_addresses() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1\n";
        let rows = parse_table(tcp, false);
        assert_eq!(rows[0].address, "0.0.0.0:8080");
        assert_eq!(rows[0].state, 0x0A);
        assert_eq!(rows[0].inode, 12345);
        assert_eq!(rows[1].address, "127.0.0.1:53");
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1\n   1: 0000AAFD000000000000000003000000:0035 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 778 1\n";
        let rows = parse_table(tcp6, true);
        assert_eq!(rows[0].address, "[::]:8080");
        assert_eq!(rows[1].address, "[fdaa::3]:53");
    }

    #[test]
    fn a_command_with_parentheses_and_spaces_keeps_its_fields() {
        let fields = stat_fields("42 (my (odd) app) S 1 42 42 0 -1").unwrap();
        assert_eq!(fields[0], "S");
        assert_eq!(fields[1], "1");
    }

    #[test]
    fn this_process_reads_as_a_process_that_listens() {
        // A positive control on the real /proc: this test's own process, with a listener.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = std::process::id();
        let read = read(Path::new("/proc"), &[me, u32::MAX]).unwrap();
        assert_eq!(read.len(), 1, "the process that does not exist is left out");
        let process = &read[0];
        assert!(process.rss > 0 && process.stime > 0, "{process:?}");
        assert!(!process.command.is_empty() && !process.directory.is_empty());
        assert!(
            process
                .listen_sockets
                .iter()
                .any(|s| s.proto == "tcp" && s.address == format!("127.0.0.1:{port}")),
            "{process:?}"
        );
    }
}
