//! `X-Forwarded-For` and `Forwarded` through `ClientIp::resolve`: never a panic, bounded work, and
//! the answer is always the peer or an address written in the header.
//!
//! cargo +nightly fuzz run forwarded -- -max_total_time=300

#![no_main]

use std::net::IpAddr;

use floodwall_http::key::{ClientIp, ForwardedHeader};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (header, name) = if selector & 1 == 0 {
        (ForwardedHeader::XForwardedFor, "x-forwarded-for")
    } else {
        (ForwardedHeader::Forwarded, "forwarded")
    };
    let mut headers = HeaderMap::new();
    // Each line of the input is one header line, as a client or proxy could send them.
    for line in rest.split(|&b| b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(HeaderName::from_static(name), value);
        }
    }
    let peer: IpAddr = "10.0.0.5".parse().unwrap();
    let client_ip = ClientIp::new()
        .trusted_proxies(["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()])
        .header(header);
    let resolved = client_ip.resolve(peer, &headers);
    let key = client_ip.key_for(resolved);
    assert!(!key.is_empty());
    if resolved != peer {
        // Whatever it returned was written somewhere in the headers, in some spelling.
        let text = String::from_utf8_lossy(rest);
        let v4_or_v6_seen = match resolved {
            IpAddr::V4(v4) => text.contains(&v4.to_string()) || text.to_ascii_lowercase().contains("::ffff:"),
            IpAddr::V6(_) => text.contains(':'),
        };
        assert!(v4_or_v6_seen, "{resolved} not in {text:?}");
    }
    for entry in String::from_utf8_lossy(rest).split(',') {
        let _ = floodwall_http::key::parse_forwarded_for_entry(entry);
        let _ = floodwall_http::key::parse_forwarded_entry(entry);
    }
});
