//! Placement against random hosts: a chosen host is in the region, up, and has room,
//! and no other such host holds fewer of the group; a refusal is right about what is
//! short; and a group placed one machine after another spreads evenly over the hosts
//! with room. `ALOFT_PLACEMENT_CASES` (10,000 by default) sets how many cases.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code fails loudly"
)]

use aloft_types::machine::{CpuKind, MachineGuest};
use aloft_types::{HostId, HostState};
use proptest::prelude::*;

use super::{Candidate, Need, Refusal, SHARES_PER_CPU, Short, choose};

fn host(n: usize) -> HostId {
    format!("{n:016x}").parse().unwrap()
}

fn candidate() -> impl Strategy<Value = (String, HostState, i64, i64, i64, i64, usize)> {
    (
        prop::sample::select(vec!["ams".to_owned(), "ord".to_owned()]),
        prop::sample::select(vec![
            HostState::Up,
            HostState::Up,
            HostState::Up,
            HostState::Cordoned,
            HostState::Draining,
            HostState::Down,
        ]),
        1..8i64,
        prop::sample::select(vec![0i64, 512, 1024, 4096]),
        0..130i64,
        0..5000i64,
        0..4usize,
    )
}

fn hosts() -> impl Strategy<Value = Vec<Candidate>> {
    prop::collection::vec(candidate(), 0..7).prop_map(|hosts| {
        hosts
            .into_iter()
            .enumerate()
            .map(
                |(n, (region, state, cpus, memory_mb, shares, memory, siblings))| Candidate {
                    id: host(n),
                    region,
                    state,
                    cpus,
                    memory_mb,
                    used: Need {
                        shares: shares.min(cpus * SHARES_PER_CPU),
                        memory_mb: if memory_mb > 0 {
                            memory.min(memory_mb)
                        } else {
                            memory
                        },
                    },
                    siblings,
                },
            )
            .collect()
    })
}

fn need() -> impl Strategy<Value = Need> {
    (prop::option::of((
        1..9u32,
        prop::bool::ANY,
        prop::sample::select(vec![0u32, 256, 1024, 2048]),
    )),)
        .prop_map(|(guest,)| {
            let guest = guest.map(|(cpus, performance, memory_mb)| MachineGuest {
                cpus,
                cpu_kind: Some(if performance {
                    CpuKind::Performance
                } else {
                    CpuKind::Shared
                }),
                memory_mb,
                ..MachineGuest::default()
            });
            Need::of(guest.as_ref())
        })
}

fn free(host: &Candidate) -> (i64, i64) {
    let memory = if host.memory_mb > 0 {
        host.memory_mb - host.used.memory_mb
    } else {
        i64::MAX
    };
    (host.cpus * SHARES_PER_CPU - host.used.shares, memory)
}

fn fits(host: &Candidate, need: Need) -> bool {
    let (shares, memory) = free(host);
    shares >= need.shares && memory >= need.memory_mb
}

fn cases() -> u32 {
    std::env::var("ALOFT_PLACEMENT_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_machine_goes_to_an_up_host_of_its_region_with_room(hosts in hosts(), need in need()) {
        let usable: Vec<&Candidate> = hosts
            .iter()
            .filter(|h| h.region == "ams" && h.state == HostState::Up && fits(h, need))
            .collect();
        match choose("ams", need, &hosts) {
            Ok(id) => {
                let chosen = hosts.iter().find(|h| h.id == id).unwrap();
                prop_assert!(usable.contains(&chosen), "{chosen:?} is not usable");
                let fewest = usable.iter().map(|h| h.siblings).min().unwrap();
                prop_assert_eq!(chosen.siblings, fewest, "the group does not spread");
            }
            Err(refusal) => {
                prop_assert!(usable.is_empty(), "refused ({refusal}) with {usable:?} usable");
                let text = refusal.to_string();
                prop_assert!(text.contains("region ams"), "{text}");
                match refusal {
                    Refusal::NoHosts { .. } => {
                        prop_assert!(hosts.iter().all(|h| h.region != "ams"));
                    }
                    Refusal::NoneUp { hosts: states, .. } => {
                        prop_assert!(!states.is_empty());
                        prop_assert!(states.iter().all(|(_, s)| *s != HostState::Up));
                    }
                    Refusal::NoRoom { short, .. } => {
                        let up: Vec<&Candidate> = hosts
                            .iter()
                            .filter(|h| h.region == "ams" && h.state == HostState::Up)
                            .collect();
                        prop_assert!(!up.is_empty());
                        let cpu = up.iter().any(|h| free(h).0 >= need.shares);
                        let memory = up.iter().any(|h| free(h).1 >= need.memory_mb);
                        match short {
                            Short::Memory => prop_assert!(cpu && !memory, "{text}"),
                            Short::Cpu => prop_assert!(!cpu && memory, "{text}"),
                            Short::Both => prop_assert!(cpu == memory, "{text}"),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_group_spreads_evenly_over_the_hosts_with_room(count in 1..40usize, hosts in 1..6usize) {
        let mut candidates: Vec<Candidate> = (0..hosts)
            .map(|n| Candidate {
                id: host(n),
                region: "ams".to_owned(),
                state: HostState::Up,
                cpus: 8,
                memory_mb: 64 * 1024,
                used: Need::NOTHING,
                siblings: 0,
            })
            .collect();
        let need = Need::of(None);
        for _ in 0..count {
            let id = choose("ams", need, &candidates).unwrap();
            let chosen = candidates.iter_mut().find(|h| h.id == id).unwrap();
            chosen.siblings += 1;
            chosen.used.shares += need.shares;
            chosen.used.memory_mb += need.memory_mb;
        }
        let most = candidates.iter().map(|h| h.siblings).max().unwrap();
        let fewest = candidates.iter().map(|h| h.siblings).min().unwrap();
        prop_assert!(most - fewest <= 1, "{:?}", candidates.iter().map(|h| h.siblings).collect::<Vec<_>>());
    }
}

#[test]
fn sizes_count_in_shares_and_megabytes() {
    assert_eq!(
        Need::of(None),
        Need {
            shares: 1,
            memory_mb: 256
        },
        "shared-cpu-1x"
    );
    let performance = MachineGuest {
        cpus: 2,
        cpu_kind: Some(CpuKind::Performance),
        memory_mb: 4096,
        ..MachineGuest::default()
    };
    assert_eq!(
        Need::of(Some(&performance)),
        Need {
            shares: 32,
            memory_mb: 4096
        }
    );
}

#[test]
fn a_refusal_names_the_region_and_what_is_short() {
    let full = Candidate {
        id: host(1),
        region: "ord".to_owned(),
        state: HostState::Up,
        cpus: 2,
        memory_mb: 1024,
        used: Need {
            shares: 4,
            memory_mb: 900,
        },
        siblings: 0,
    };
    let text = choose("ord", Need::of(None), std::slice::from_ref(&full))
        .unwrap_err()
        .to_string();
    assert_eq!(
        text,
        "no host in region ord can take the machine: memory is short (it needs 256 MB of memory; the most free on one up host is 124 MB of memory)"
    );
    let text = choose("ams", Need::of(None), std::slice::from_ref(&full))
        .unwrap_err()
        .to_string();
    assert_eq!(
        text,
        "no host in region ams can take the machine (regions with hosts: ord)"
    );
    let cordoned = Candidate {
        state: HostState::Cordoned,
        ..full.clone()
    };
    let text = choose("ord", Need::of(None), &[cordoned])
        .unwrap_err()
        .to_string();
    assert_eq!(
        text,
        format!(
            "no host in region ord can take the machine: none is up ({} is cordoned)",
            host(1)
        )
    );
    // The positive control: with room, the same host is chosen.
    let roomy = Candidate {
        used: Need::NOTHING,
        ..full
    };
    assert_eq!(choose("ord", Need::of(None), &[roomy]), Ok(host(1)));
}
