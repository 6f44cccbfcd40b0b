//! Property tests: the parsers that read what the other side sends never panic, whatever the
//! bytes, and what they accept survives a round trip.

use proptest::prelude::*;
use xbridge_proto::endpoint::Endpoint;
use xbridge_proto::handshake::{AgentHandshake, Message};
use xbridge_proto::setup::{ByteOrder, SetupRequest, MAX_AUTH_DATA, MAX_AUTH_NAME};
use xbridge_proto::Key;

fn endpoint() -> impl Strategy<Value = Endpoint> {
    prop_oneof![
        ("[a-z][a-z0-9.-]{0,20}", any::<u16>())
            .prop_map(|(host, port)| Endpoint::Tcp { host, port }),
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| Endpoint::Tcp {
            host: std::net::Ipv4Addr::from(ip).to_string(),
            port
        }),
        (any::<[u16; 8]>(), any::<u16>()).prop_map(|(ip, port)| Endpoint::Tcp {
            host: std::net::Ipv6Addr::from(ip).to_string(),
            port
        }),
        "/[a-zA-Z0-9_./-]{1,40}".prop_map(|p| Endpoint::Unix(p.into())),
        (any::<u32>(), any::<u32>()).prop_map(|(cid, port)| Endpoint::Vsock { cid, port }),
        Just(Endpoint::Stdio),
    ]
}

fn setup_request() -> impl Strategy<Value = SetupRequest> {
    (
        prop_oneof![Just(ByteOrder::Little), Just(ByteOrder::Big)],
        any::<u16>(),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..=MAX_AUTH_NAME),
        proptest::collection::vec(any::<u8>(), 0..=MAX_AUTH_DATA),
    )
        .prop_map(
            |(byte_order, major, minor, auth_name, auth_data)| SetupRequest {
                byte_order,
                major,
                minor,
                auth_name,
                auth_data,
            },
        )
}

proptest! {
    #[test]
    fn endpoints_round_trip(e in endpoint()) {
        prop_assert_eq!(e.to_string().parse::<Endpoint>().unwrap(), e);
    }

    #[test]
    fn endpoint_parser_never_panics(text in "\\PC{0,60}") {
        let _ = text.parse::<Endpoint>();
    }

    #[test]
    fn setup_requests_round_trip_in_both_orders(req in setup_request()) {
        let bytes = req.encode();
        prop_assert_eq!(bytes.len() % 4, 0);
        let (parsed, used) = SetupRequest::parse(&bytes).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(parsed, req);
    }

    #[test]
    fn setup_parser_never_panics_or_claims_more_than_it_has(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(Some((_, used))) = SetupRequest::parse(&bytes) {
            prop_assert!(used <= bytes.len());
        }
    }

    #[test]
    fn handshake_lines_never_panic(line in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Message::parse(&line, "guest");
        let mut agent = AgentHandshake::new(Key::generate());
        let _ = agent.receive(&line);
    }

    #[test]
    fn handshake_json_of_any_shape_never_panics(
        kind in prop_oneof![Just("hello"), Just("auth"), Just("challenge"), Just("welcome"), Just("refuse"), Just("x")],
        version in any::<u32>(),
        nonce in "[0-9a-f]{0,70}",
    ) {
        let line = format!(r#"{{"type":"{kind}","version":{version},"nonce":"{nonce}","software":"p","proof":"{nonce}"}}"#);
        let mut agent = AgentHandshake::new(Key::generate());
        let _ = agent.receive(line.as_bytes());
        let _ = agent.receive(line.as_bytes());
    }
}
