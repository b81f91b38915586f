//! Scaling a process group to a count, as `aloft scale count` and the dashboard do it:
//! which regions gain or lose machines ([`converge`]), which machine a new one copies
//! ([`newest`], [`copy_request`]) and which go first when there are too many
//! ([`removal_order`]). Pure: the callers make the API calls and say what happened.

use std::collections::BTreeMap;

use aloft_types::api::{MachineRequest, MachineResponse};
use aloft_types::machine::{DEFAULT_PROCESS_GROUP, METADATA_PROCESS_GROUP};

/// A machine's process group (Fly's `fly_process_group` metadata; `app` without one).
pub fn group_of(machine: &MachineResponse) -> String {
    machine
        .config
        .metadata
        .get(METADATA_PROCESS_GROUP)
        .cloned()
        .unwrap_or_else(|| DEFAULT_PROCESS_GROUP.to_owned())
}

/// The newest of `machines` (by creation, then id).
pub fn newest<'a>(machines: &[&'a MachineResponse]) -> Option<&'a MachineResponse> {
    machines
        .iter()
        .max_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)))
        .copied()
}

/// The regions a group runs in: the newest machine's first, then the others by name.
pub fn group_regions(of_group: &[&MachineResponse]) -> Vec<String> {
    let mut regions: Vec<String> = Vec::new();
    if let Some(newest) = newest(of_group) {
        regions.push(newest.region.clone());
    }
    let others: std::collections::BTreeSet<&String> = of_group.iter().map(|m| &m.region).collect();
    for region in others {
        if !regions.contains(region) {
            regions.push(region.clone());
        }
    }
    regions
}

/// A new machine like `template`, in `region`: the same config, with a volume of its own
/// (the same name; a free or new one).
pub fn copy_request(template: &MachineResponse, region: &str) -> MachineRequest {
    let mut config = template.config.clone();
    for mount in &mut config.mounts {
        mount.volume.clear();
    }
    let mut request = MachineRequest::new(config);
    request.region = Some(region.to_owned());
    request
}

/// The machines of `region` in the order they are removed: stopped ones first, then the
/// newest.
pub fn removal_order<'a>(
    of_group: &[&'a MachineResponse],
    region: &str,
) -> Vec<&'a MachineResponse> {
    let mut extra: Vec<&MachineResponse> = of_group
        .iter()
        .copied()
        .filter(|m| m.region == region)
        .collect();
    extra.sort_by(|a, b| {
        let running = |m: &MachineResponse| m.state != "stopped";
        (running(a), &b.created_at, &b.id).cmp(&(running(b), &a.created_at, &a.id))
    });
    extra
}

/// How many machines to add (positive) or remove (negative) in each region so that
/// `regions` hold `wanted` machines: regions over `max_per_region` give back their excess
/// (as flyctl does), then each machine added goes to the region with the fewest (under
/// the maximum; the first of equals, usually the primary), and each removed comes from
/// the one with the most (the last of equals), so the regions end as even as they can.
/// Regions not named are left alone.
pub fn converge(
    wanted: usize,
    current: &BTreeMap<String, usize>,
    regions: &[String],
    max_per_region: Option<usize>,
) -> Result<Vec<(String, i64)>, String> {
    if regions.is_empty() {
        return if wanted == 0 {
            Ok(Vec::new())
        } else {
            Err("no region to put machines in: name one with --region".to_owned())
        };
    }
    let mut counts: Vec<i64> = regions
        .iter()
        .map(|r| i64::try_from(current.get(r).copied().unwrap_or(0)).unwrap_or(i64::MAX))
        .collect();
    let start = counts.clone();
    let wanted = i64::try_from(wanted).unwrap_or(i64::MAX);
    if let Some(max) = max_per_region {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let room = max.saturating_mul(i64::try_from(regions.len()).unwrap_or(i64::MAX));
        if room < wanted {
            return Err(format!(
                "--max-per-region {max} over {} region(s) ({}) holds at most {room} machine(s), fewer than {wanted}",
                regions.len(),
                regions.join(", ")
            ));
        }
        for count in &mut counts {
            *count = (*count).min(max);
        }
    }
    let mut total: i64 = counts.iter().sum();
    let cap = max_per_region.map_or(i64::MAX, |m| i64::try_from(m).unwrap_or(i64::MAX));
    while total < wanted {
        // The region with the fewest, under the cap; the first of equals.
        let Some(at) = (0..counts.len())
            .filter(|&i| counts[i] < cap)
            .min_by_key(|&i| (counts[i], i))
        else {
            break;
        };
        counts[at] += 1;
        total += 1;
    }
    while total > wanted {
        // The region with the most; the last of equals.
        let Some(at) = (0..counts.len())
            .filter(|&i| counts[i] > 0)
            .max_by_key(|&i| (counts[i], i))
        else {
            break;
        };
        counts[at] -= 1;
        total -= 1;
    }
    Ok(regions
        .iter()
        .zip(counts.iter().zip(&start))
        .filter(|(_, (now, before))| now != before)
        .map(|(region, (now, before))| (region.clone(), now - before))
        .collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::converge;

    fn regions(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn current(counts: &[(&str, usize)]) -> BTreeMap<String, usize> {
        counts.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect()
    }

    #[test]
    fn machines_spread_evenly_over_the_regions_the_first_first() {
        let plan = converge(4, &current(&[("ams", 1)]), &regions(&["ams", "ord"]), None);
        assert_eq!(plan, Ok(vec![("ams".to_owned(), 1), ("ord".to_owned(), 2)]));
        let plan = converge(3, &current(&[]), &regions(&["ams", "ord"]), None);
        assert_eq!(plan, Ok(vec![("ams".to_owned(), 2), ("ord".to_owned(), 1)]));
        // Removing starts from the last region.
        let plan = converge(
            1,
            &current(&[("ams", 2), ("ord", 2)]),
            &regions(&["ams", "ord"]),
            None,
        );
        assert_eq!(
            plan,
            Ok(vec![("ams".to_owned(), -1), ("ord".to_owned(), -2)])
        );
        // Nothing to do, and regions not named are left alone.
        let plan = converge(
            2,
            &current(&[("ams", 2), ("syd", 5)]),
            &regions(&["ams"]),
            None,
        );
        assert_eq!(plan, Ok(Vec::new()));
    }

    #[test]
    fn max_per_region_caps_each_region_and_refuses_what_cannot_fit() {
        let plan = converge(3, &current(&[]), &regions(&["ams", "lhr", "ord"]), Some(1));
        assert_eq!(
            plan,
            Ok(vec![
                ("ams".to_owned(), 1),
                ("lhr".to_owned(), 1),
                ("ord".to_owned(), 1)
            ])
        );
        // Over the maximum gives back, and the rest goes elsewhere.
        let plan = converge(
            4,
            &current(&[("ams", 4)]),
            &regions(&["ams", "ord"]),
            Some(2),
        );
        assert_eq!(
            plan,
            Ok(vec![("ams".to_owned(), -2), ("ord".to_owned(), 2)])
        );
        let refused = converge(5, &current(&[]), &regions(&["ams", "ord"]), Some(2)).unwrap_err();
        assert!(
            refused.contains("holds at most 4 machine(s), fewer than 5"),
            "{refused}"
        );
        // The edge: exactly as many as fit, and 0 per region only for 0 machines.
        assert!(converge(4, &current(&[]), &regions(&["ams", "ord"]), Some(2)).is_ok());
        assert_eq!(
            converge(0, &current(&[]), &regions(&["ams"]), Some(0)),
            Ok(Vec::new())
        );
        assert!(converge(1, &current(&[]), &regions(&["ams"]), Some(0)).is_err());
    }
}
