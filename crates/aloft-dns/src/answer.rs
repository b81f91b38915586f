//! From query bytes to response bytes, for `.internal` names; anything else is left for
//! forwarding. Never panics on any input: malformed packets get FORMERR when their
//! header is readable and are dropped otherwise.

use std::net::{IpAddr, Ipv6Addr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{AAAA, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::zone::{Records, Scope, ZONE, Zone, is_internal};

/// Time to live of every answer: machines come and go, so short.
pub const TTL: u32 = 5;
/// The largest UDP response we send to a client that offers EDNS.
pub const MAX_EDNS_PAYLOAD: u16 = 1232;
/// The largest UDP response without EDNS (RFC 1035).
pub const MAX_PLAIN_PAYLOAD: usize = 512;
/// The length of a DNS header.
const HEADER_LEN: usize = 12;

/// Which listener a query arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `[fdaa::3]:53`: the asker's network is read from its source address.
    Private,
    /// The operators' loopback listener: every network is visible.
    Operator,
}

/// How the query arrived (UDP responses have a size limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Send these bytes back.
    Send(Vec<u8>),
    /// Not ours: ask the upstream resolver.
    Forward,
    /// Not even a header: say nothing.
    Drop,
}

/// The network a 6PN source address belongs to (`None` for anything else).
pub fn network_of(address: IpAddr) -> Option<u32> {
    let IpAddr::V6(v6) = address else {
        return None;
    };
    let segments = v6.segments();
    (segments[0] == aloft_net::PREFIX)
        .then(|| (u32::from(segments[1]) << 16) | u32::from(segments[2]))
}

/// Answers one query, or says to forward or drop it.
pub fn respond(
    zone: &Zone,
    query: &[u8],
    source: IpAddr,
    listener: Listener,
    transport: Transport,
    server_region: &str,
) -> Reply {
    let request = match Message::from_vec(query) {
        Ok(request) => request,
        Err(_) => return error_from_header(query, ResponseCode::FormErr),
    };
    if request.metadata.message_type != MessageType::Query {
        return Reply::Drop;
    }
    if request.metadata.op_code != OpCode::Query {
        return finish(
            reply_to(&request, ResponseCode::NotImp),
            &request,
            transport,
        );
    }
    let [question] = request.queries.as_slice() else {
        return finish(
            reply_to(&request, ResponseCode::FormErr),
            &request,
            transport,
        );
    };
    let mut name = question.name().to_ascii();
    name.make_ascii_lowercase();
    let name = name.trim_end_matches('.');
    if !is_internal(name) {
        return Reply::Forward;
    }
    let scope = match listener {
        Listener::Operator => Scope::All,
        // Not from a private network: a network with no apps (no names but the zone).
        Listener::Private => Scope::Network(network_of(source).unwrap_or(0)),
    };
    let region = match source {
        IpAddr::V6(v6) => zone.region_of(v6).unwrap_or(server_region),
        IpAddr::V4(_) => server_region,
    };
    let mut response = reply_to(&request, ResponseCode::NoError);
    response.metadata.authoritative = true;
    match zone.lookup(name, scope, region) {
        None => {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.add_authority(soa());
        }
        Some(records) => {
            let answers = answers(question.name(), question.query_type(), name, &records);
            if answers.is_empty() {
                response.add_authority(soa());
            }
            response.add_answers(answers);
        }
    }
    finish(response, &request, transport)
}

fn answers(owner: &Name, query_type: RecordType, name: &str, records: &Records) -> Vec<Record> {
    let mut out = Vec::new();
    let any = query_type == RecordType::ANY;
    if any || query_type == RecordType::AAAA {
        for address in &records.aaaa {
            out.push(Record::from_rdata(
                owner.clone(),
                TTL,
                RData::AAAA(AAAA(*address)),
            ));
        }
    }
    if (any || query_type == RecordType::TXT)
        && let Some(text) = &records.txt
    {
        // A TXT string holds at most 255 bytes; longer values are split across strings
        // of one record, which clients join.
        let chunks: Vec<String> = text
            .as_bytes()
            .chunks(255)
            .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
            .collect();
        let chunks = if chunks.is_empty() {
            vec![String::new()]
        } else {
            chunks
        };
        out.push(Record::from_rdata(
            owner.clone(),
            TTL,
            RData::TXT(TXT::new(chunks)),
        ));
    }
    if (any || query_type == RecordType::SOA) && name == ZONE {
        out.push(soa());
    }
    out
}

/// The zone's SOA: sent with negative answers so resolvers cache them for [`TTL`] only.
fn soa() -> Record {
    let zone = Name::from_ascii("internal.").unwrap_or_default();
    let host = Name::from_ascii("ns.internal.").unwrap_or_default();
    let mail = Name::from_ascii("hostmaster.internal.").unwrap_or_default();
    Record::from_rdata(
        zone,
        TTL,
        RData::SOA(SOA::new(host, mail, 1, 60, 60, 600, TTL)),
    )
}

fn reply_to(request: &Message, code: ResponseCode) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.checking_disabled = request.metadata.checking_disabled;
    response.metadata.response_code = code;
    response.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_EDNS_PAYLOAD);
        response.set_edns(edns);
    }
    response
}

/// Serializes `response`, truncating it (TC set, answers dropped) when it does not fit a
/// UDP reply to this client.
fn finish(response: Message, request: &Message, transport: Transport) -> Reply {
    let Ok(bytes) = response.to_vec() else {
        return Reply::Send(bare(request.metadata.id, 0, ResponseCode::ServFail));
    };
    let limit = match (transport, &request.edns) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, Some(edns)) => {
            usize::from(edns.max_payload().min(MAX_EDNS_PAYLOAD)).max(MAX_PLAIN_PAYLOAD)
        }
        (Transport::Udp, None) => MAX_PLAIN_PAYLOAD,
    };
    if bytes.len() <= limit {
        return Reply::Send(bytes);
    }
    match response.truncate().to_vec() {
        Ok(bytes) => Reply::Send(bytes),
        Err(_) => Reply::Drop,
    }
}

/// A bare error response built from the header of a query that did not parse. Packets
/// shorter than a header, and responses (answering them would let two servers bounce
/// packets forever), get nothing.
fn error_from_header(query: &[u8], code: ResponseCode) -> Reply {
    if query.len() < HEADER_LEN || query[2] & 0x80 != 0 {
        return Reply::Drop;
    }
    Reply::Send(bare(
        u16::from_be_bytes([query[0], query[1]]),
        query[2] & 0x78,
        code,
    ))
}

/// A header-only response: `opcode_bits` already in place (bits 3-6 of the third byte).
fn bare(id: u16, opcode_bits: u8, code: ResponseCode) -> Vec<u8> {
    let mut header = vec![0u8; HEADER_LEN];
    header[..2].copy_from_slice(&id.to_be_bytes());
    header[2] = 0x80 | opcode_bits;
    header[3] = 0x80 | (code.low() & 0x0f);
    header
}

/// A SERVFAIL for `query` (when forwarding failed).
pub fn servfail(query: &[u8]) -> Reply {
    match Message::from_vec(query) {
        Ok(request) => finish(
            reply_to(&request, ResponseCode::ServFail),
            &request,
            Transport::Tcp,
        ),
        Err(_) => error_from_header(query, ResponseCode::ServFail),
    }
}

/// The address a host uses to ask as a member of `network` (its gateway on no host):
/// `fdaa:NNNN:NNNN::` itself, which no machine holds.
pub fn network_source(network: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        aloft_net::PREFIX,
        (network >> 16) as u16,
        (network & 0xffff) as u16,
        0,
        0,
        0,
        0,
        0,
    ))
}
