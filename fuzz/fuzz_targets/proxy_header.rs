//! Any bytes at the start of a connection, read as a PROXY protocol header (v1 or v2):
//! nothing may panic, a header never claims more bytes than it was given, and the
//! addresses of a header we would write come back as they went in.

#![no_main]

use aloft_proxy::tcp::{ProxyParseError, parse_proxy_header, proxy_v1, proxy_v2};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_proxy_header(data) {
        Ok(header) => {
            assert!(header.length <= data.len());
            if let (Some(source), Some(destination)) = (header.source, header.destination) {
                for written in [proxy_v1(source, destination), proxy_v2(source, destination)] {
                    let again = parse_proxy_header(&written).expect("our own header parses");
                    assert_eq!(again.length, written.len());
                    if source.is_ipv4() == destination.is_ipv4() {
                        assert_eq!((again.source, again.destination), (Some(source), Some(destination)));
                    }
                }
            }
        }
        Err(ProxyParseError::Incomplete | ProxyParseError::Invalid(_)) => {}
    }
});
