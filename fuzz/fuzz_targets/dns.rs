//! Any bytes as a DNS query to the private network's server, from any kind of source, over
//! UDP and TCP: nothing may panic, and whatever it sends back must be a DNS message.

#![no_main]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use aloft_dns::{Listener, Reply, Transport, Zone, respond};
use aloft_types::MachineState;
use aloft_types::catalog::{Catalog, CatalogApp, CatalogMachine};
use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;

fn zone() -> &'static Zone {
    static ZONE: OnceLock<Zone> = OnceLock::new();
    ZONE.get_or_init(|| {
        let machines = (0..40u16)
            .map(|n| CatalogMachine {
                id: format!("m{n:013}"),
                app: if n % 2 == 0 { "web" } else { "db" }.to_owned(),
                region: if n % 3 == 0 { "ams" } else { "ord" }.to_owned(),
                state: if n % 5 == 0 { MachineState::Stopped } else { MachineState::Started },
                private_ip: format!("fdaa:0:1:0:1:0:{n:x}:2").parse().ok(),
                process_group: "app".to_owned(),
                metadata: BTreeMap::from([("role".to_owned(), "primary".to_owned())]),
                skip_registration: false,
                cordoned: false,
                services: Vec::new(),
                checks: Vec::new(),
                autostart_disabled: false,
                primary_region: None,
                statics: Vec::new(),
            })
            .collect();
        let catalog = Catalog {
            acme_challenges: Vec::new(),
            apps: vec![
                CatalogApp { name: "web".into(), org_id: "o".into(), network: 1, ipv4: Vec::new(), hostnames: Vec::new() },
                CatalogApp { name: "db".into(), org_id: "o".into(), network: 1, ipv4: Vec::new(), hostnames: Vec::new() },
            ],
            machines,
        };
        Zone::new(&Arc::new(catalog))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, query)) = data.split_first() else {
        return;
    };
    let sources: [IpAddr; 4] = [
        "fdaa:0:1:0:1:0:3:2".parse().unwrap(),
        "fdaa:0:2::9".parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
        "::1".parse().unwrap(),
    ];
    let source = sources[usize::from(selector % 4)];
    let listener = if selector & 4 == 0 { Listener::Private } else { Listener::Operator };
    let transport = if selector & 8 == 0 { Transport::Udp } else { Transport::Tcp };
    if let Reply::Send(bytes) = respond(zone(), query, source, listener, transport, "ams") {
        assert!(
            bytes.len() == 12 || Message::from_vec(&bytes).is_ok(),
            "the server sent something that is not DNS"
        );
        if transport == Transport::Udp {
            assert!(bytes.len() <= 1232, "a UDP answer larger than any client accepts");
        }
    }
});
