//! Client identity tables (docs/testing.md: H1-H8): which address a request is keyed by.

use std::net::IpAddr;

use floodwall_http::key::{ClientIp, ForwardedHeader};
use http::HeaderMap;

fn headers(lines: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in lines {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    map
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn trusting(networks: &[&str]) -> ClientIp {
    ClientIp::new().trusted_proxies(networks.iter().map(|n| n.parse().unwrap()))
}

#[test]
fn without_trusted_proxies_every_forwarding_header_is_ignored() {
    // H1
    let spoofed = headers(&[
        ("x-forwarded-for", "1.2.3.4"),
        ("x-real-ip", "5.6.7.8"),
        ("forwarded", "for=9.9.9.9"),
    ]);
    assert_eq!(
        ClientIp::new().resolve(ip("127.0.0.2"), &spoofed),
        ip("127.0.0.2")
    );
}

#[test]
fn behind_trusted_proxies_the_rightmost_untrusted_address_is_the_client() {
    let client_ip = trusting(&["10.0.0.0/8"]);
    let table = [
        // H2: the leftmost entry is whatever the client wrote.
        (
            vec![("x-forwarded-for", "1.2.3.4, 203.0.113.7")],
            "10.0.0.5",
            "203.0.113.7",
        ),
        // Trusted hops on the right are skipped.
        (
            vec![("x-forwarded-for", "203.0.113.7, 10.1.1.1, 10.2.2.2")],
            "10.0.0.5",
            "203.0.113.7",
        ),
        // H3: an untrusted peer is the client, whatever it sends.
        (
            vec![("x-forwarded-for", "1.2.3.4")],
            "198.51.100.9",
            "198.51.100.9",
        ),
        // H4: several lines form one list, in order; spaces, empty items and ports are fine.
        (
            vec![
                ("x-forwarded-for", "1.1.1.1 , 203.0.113.8:4711"),
                ("x-forwarded-for", " , 10.0.0.9"),
            ],
            "10.0.0.5",
            "203.0.113.8",
        ),
        (
            vec![("x-forwarded-for", "[2001:db8::7]:443")],
            "10.0.0.5",
            "2001:db8::7",
        ),
        (
            vec![("x-forwarded-for", "2001:db8::8")],
            "10.0.0.5",
            "2001:db8::8",
        ),
        (
            vec![("x-forwarded-for", "::ffff:203.0.113.9")],
            "10.0.0.5",
            "203.0.113.9",
        ),
        // H4: garbage stops the walk at the nearest trusted hop, never reaching further left.
        (
            vec![("x-forwarded-for", "1.2.3.4, not-an-ip, 10.0.0.7")],
            "10.0.0.5",
            "10.0.0.7",
        ),
        (
            vec![("x-forwarded-for", "1.2.3.4, 999.1.1.1")],
            "10.0.0.5",
            "10.0.0.5",
        ),
        // H8: every hop trusted: the leftmost trusted address.
        (
            vec![("x-forwarded-for", "10.9.9.9, 10.8.8.8")],
            "10.0.0.5",
            "10.9.9.9",
        ),
        // No header at all behind a trusted peer: the peer.
        (vec![], "10.0.0.5", "10.0.0.5"),
        // A mapped peer counts as its IPv4 address.
        (
            vec![("x-forwarded-for", "203.0.113.10")],
            "::ffff:10.0.0.5",
            "203.0.113.10",
        ),
    ];
    for (lines, peer, expected) in table {
        let got = client_ip.resolve(ip(peer), &headers(&lines));
        assert_eq!(got, ip(expected), "{lines:?} from {peer}");
    }
}

#[test]
fn forwarded_is_parsed_per_rfc_7239() {
    // H5
    let client_ip = trusting(&["10.0.0.0/8"]).header(ForwardedHeader::Forwarded);
    let table = [
        (
            r#"for=203.0.113.7;proto=https, for=10.0.0.3"#,
            "203.0.113.7",
        ),
        (r#"for="[2001:db8:cafe::17]:4711""#, "2001:db8:cafe::17"),
        (r#"For="[2001:db8::1]";by=10.0.0.1"#, "2001:db8::1"),
        (r#"for=192.0.2.60:8080"#, "192.0.2.60"),
        // unknown and obfuscated identifiers stop the walk: never skipped to reach further left.
        (r#"for=1.2.3.4, for=unknown, for=10.0.0.3"#, "10.0.0.3"),
        (r#"for=1.2.3.4, for=_hidden"#, "10.0.0.5"),
        (r#"for=1.2.3.4, proto=https"#, "10.0.0.5"),
        (r#"for="[2001:db8::1"#, "10.0.0.5"),
    ];
    for (value, expected) in table {
        let got = client_ip.resolve(ip("10.0.0.5"), &headers(&[("forwarded", value)]));
        assert_eq!(got, ip(expected), "{value}");
    }
}

#[test]
fn only_the_configured_header_is_read() {
    // H6
    let both = headers(&[
        ("x-forwarded-for", "203.0.113.1"),
        ("forwarded", "for=203.0.113.2"),
    ]);
    let xff = trusting(&["10.0.0.0/8"]);
    let forwarded = trusting(&["10.0.0.0/8"]).header(ForwardedHeader::Forwarded);
    assert_eq!(xff.resolve(ip("10.0.0.5"), &both), ip("203.0.113.1"));
    assert_eq!(forwarded.resolve(ip("10.0.0.5"), &both), ip("203.0.113.2"));
}

#[test]
fn header_bombs_stop_after_max_hops() {
    // H7: the walk reads at most max_hops entries from the right, so its work is bounded however
    // long the header: a client 10 000 trusted hops away is never reached, and 64 KB of empty
    // items end at the peer.
    let client_ip = trusting(&["10.0.0.0/8"]);
    let far = format!("203.0.113.1, {}", vec!["10.0.0.1"; 10_000].join(", "));
    assert_eq!(
        client_ip.resolve(ip("10.0.0.5"), &headers(&[("x-forwarded-for", &far)])),
        ip("10.0.0.1")
    );
    let near = format!("203.0.113.1, {}", vec!["10.0.0.1"; 31].join(", "));
    assert_eq!(
        client_ip.resolve(ip("10.0.0.5"), &headers(&[("x-forwarded-for", &near)])),
        ip("203.0.113.1")
    );
    let commas = ",".repeat(64 * 1024);
    assert_eq!(
        client_ip.resolve(ip("10.0.0.5"), &headers(&[("x-forwarded-for", &commas)])),
        ip("10.0.0.5")
    );
}

#[test]
fn max_hops_sets_how_far_the_walk_reads() {
    // H7: two hops read, the third (the client) never reached; the default reads it.
    let chain = headers(&[("x-forwarded-for", "203.0.113.1, 10.0.0.1, 10.0.0.2")]);
    let short = trusting(&["10.0.0.0/8"]).max_hops(2);
    assert_eq!(short.resolve(ip("10.0.0.5"), &chain), ip("10.0.0.1"));
    let default = trusting(&["10.0.0.0/8"]);
    assert_eq!(default.resolve(ip("10.0.0.5"), &chain), ip("203.0.113.1"));
}

#[test]
fn entries_with_a_port_parse_only_with_a_real_port() {
    // H5: a port is 1 to 5 digits; anything else makes the entry malformed, which stops a walk.
    for (entry, expected) in [
        ("192.0.2.1:8080", Some("192.0.2.1")),
        ("192.0.2.1:65535", Some("192.0.2.1")),
        ("[2001:db8::1]:80", Some("2001:db8::1")),
        ("[2001:db8::1]", Some("2001:db8::1")),
        (" 2001:db8::2 ", Some("2001:db8::2")),
        ("192.0.2.1:", None),
        ("192.0.2.1:123456", None),
        ("192.0.2.1:8a", None),
        ("[2001:db8::1]:", None),
        ("[2001:db8::1]:x", None),
        ("unknown", None),
    ] {
        assert_eq!(
            floodwall_http::key::parse_forwarded_for_entry(entry),
            expected.map(ip),
            "{entry:?}"
        );
    }
    for (element, expected) in [
        ("for=192.0.2.60;proto=http", Some("192.0.2.60")),
        (r#" for="[2001:db8::1]:4711" "#, Some("2001:db8::1")),
        ("for=192.0.2.60:", None),
        ("by=192.0.2.60", None),
    ] {
        assert_eq!(
            floodwall_http::key::parse_forwarded_entry(element),
            expected.map(ip),
            "{element:?}"
        );
    }
}

#[test]
fn ipv6_clients_are_grouped_by_prefix() {
    let client_ip = ClientIp::new();
    assert_eq!(
        client_ip.key_for(ip("2001:db8:1:2:3:4:5:6")),
        "2001:db8:1:2::/64"
    );
    assert_eq!(
        client_ip.key_for(ip("2001:db8:1:2:ffff::1")),
        "2001:db8:1:2::/64"
    );
    assert_eq!(
        ClientIp::new()
            .ipv6_prefix(48)
            .key_for(ip("2001:db8:1:2::1")),
        "2001:db8:1::/48"
    );
    assert_eq!(client_ip.key_for(ip("203.0.113.7")), "203.0.113.7");
    assert_eq!(
        ClientIp::new().ipv4_prefix(24).key_for(ip("203.0.113.7")),
        "203.0.113.0/24"
    );
    assert_eq!(client_ip.key_for(ip("::ffff:203.0.113.7")), "203.0.113.7");
}

mod other_keys {
    use floodwall_http::key::{
        Extension, Global, Header, KeyError, KeyExtractor, KeyExtractorExt, Query, key_fn,
    };
    use http::{HeaderName, Request};

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = Request::get(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[derive(Clone)]
    struct UserId(u64);

    impl std::fmt::Display for UserId {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "user-{}", self.0)
        }
    }

    #[test]
    fn query_header_extension_global_and_closures_extract_their_keys() {
        let query = Query::new("api_key");
        assert_eq!(
            query.extract(&parts("/x?a=1&api_key=k%20y", &[])).unwrap(),
            b"k y"
        );
        assert!(matches!(
            query.extract(&parts("/x?api_key=", &[])),
            Err(KeyError::Missing { .. })
        ));

        let header = Header::new(HeaderName::from_static("x-api-key"));
        assert_eq!(
            header
                .extract(&parts("/", &[("x-api-key", "abc")]))
                .unwrap(),
            b"abc"
        );

        let user = Extension::<UserId>::new("authenticated user");
        let mut request = parts("/", &[]);
        let missing = user.extract(&request).unwrap_err();
        assert!(
            missing.to_string().contains("authenticated user"),
            "{missing}"
        );
        request.extensions.insert(UserId(42));
        assert_eq!(user.extract(&request).unwrap(), b"user-42");

        assert!(matches!(
            header.extract(&parts("/", &[("x-api-key", "")])),
            Err(KeyError::Missing { .. })
        ));
        let boxed: Box<dyn KeyExtractor> = Box::new(header);
        assert_eq!(
            boxed.extract(&parts("/", &[("x-api-key", "xyz")])).unwrap(),
            b"xyz"
        );

        assert!(format!("{user:?}").contains("UserId"), "{user:?}");
        assert_eq!(Global.extract(&parts("/", &[])).unwrap(), b"global");
        let by_path = key_fn(|request| Ok(request.uri.path().as_bytes().to_vec()));
        assert_eq!(
            by_path.extract(&parts("/tenants/7", &[])).unwrap(),
            b"/tenants/7"
        );
        assert_eq!(format!("{by_path:?}"), "FnKey");
    }

    #[test]
    fn composite_and_fallback_keys_never_collide() {
        let a = key_fn(|r| Ok(r.headers["a"].as_bytes().to_vec()));
        let b = key_fn(|r| Ok(r.headers["b"].as_bytes().to_vec()));
        let pair = (a, b);
        let one = pair
            .extract(&parts("/", &[("a", "ab"), ("b", "c")]))
            .unwrap();
        let two = pair
            .extract(&parts("/", &[("a", "a"), ("b", "bc")]))
            .unwrap();
        assert_ne!(one, two);

        let api_key = Header::new(HeaderName::from_static("x-api-key")).or(Query::new("ip"));
        let from_header = api_key
            .extract(&parts("/", &[("x-api-key", "1.2.3.4")]))
            .unwrap();
        let from_fallback = api_key.extract(&parts("/?ip=1.2.3.4", &[])).unwrap();
        assert_ne!(from_header, from_fallback);
        assert!(matches!(
            api_key.extract(&parts("/", &[])),
            Err(KeyError::Missing { .. })
        ));
    }
}
