//! Property tests for the engine's parsers of user input (issue 15): image
//! references, container port keys, Dockerfiles, signals. Arbitrary input
//! never panics; valid input round-trips.

use berth_engine::build::dockerfile;
use berth_engine::container::signal;
use berth_engine::image::reference::{ParseError, Reference};
use berth_engine::network::ports::ContainerPort;
use proptest::prelude::*;

fn component() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,8}([._-][a-z0-9]{1,8}){0,2}"
}

fn tag() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"
}

fn domain() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("localhost".to_owned())),
        "[a-z]{1,8}\\.[a-z]{2,4}".prop_map(Some),
        ("[a-z]{1,8}\\.[a-z]{2,4}", 1u16..).prop_map(|(d, p)| Some(format!("{d}:{p}"))),
        (1u16..).prop_map(|p| Some(format!("localhost:{p}"))),
    ]
}

proptest! {
    #[test]
    fn reference_parse_never_panics(input in ".{0,300}") {
        let _ = Reference::parse(&input);
    }

    #[test]
    fn valid_references_parse_and_round_trip(
        domain in domain(),
        path in prop::collection::vec(component(), 1..4),
        tag in prop::option::of(tag()),
        digest in prop::option::of("[0-9a-f]{64}"),
    ) {
        let mut path = path;
        if domain.is_none() {
            // Docker reads a first component with a '.' as a registry domain.
            path[0] = path[0].replace('.', "-");
        }
        let mut text = path.join("/");
        if let Some(d) = &domain {
            text = format!("{d}/{text}");
        }
        if let Some(t) = &tag {
            text.push(':');
            text.push_str(t);
        }
        if let Some(h) = &digest {
            text.push_str("@sha256:");
            text.push_str(h);
        }
        let parsed = Reference::parse(&text).unwrap();
        prop_assert_eq!(parsed.tag.as_deref(), tag.as_deref());
        prop_assert_eq!(parsed.digest.clone(), digest.map(|h| format!("sha256:{h}")));
        // The displayed (familiar) form parses back to the same reference.
        let again = Reference::parse(&parsed.to_string()).unwrap();
        prop_assert_eq!(&again, &parsed);
        prop_assert!(parsed.full_name().ends_with(&path.join("/")));
    }

    #[test]
    fn uppercase_repositories_are_refused(name in "[a-z]{0,5}[A-Z][a-z]{0,5}") {
        prop_assert_eq!(Reference::parse(&name), Err(ParseError::Uppercase));
    }

    #[test]
    fn container_port_keys_round_trip(port in 1u16.., udp in any::<bool>()) {
        let key = format!("{port}/{}", if udp { "udp" } else { "tcp" });
        let parsed = ContainerPort::parse(&key).unwrap();
        prop_assert_eq!(parsed.port, port);
        prop_assert_eq!(parsed.key(), key);
    }

    #[test]
    fn container_port_parse_never_panics(key in ".{0,40}") {
        if let Ok(parsed) = ContainerPort::parse(&key) {
            prop_assert!(parsed.port != 0);
        }
    }

    #[test]
    fn dockerfile_parse_never_panics(text in "(([A-Za-z]{2,10}|#)[ \\t]?.{0,40}(\\\\)?\n){0,12}") {
        let _ = dockerfile::parse(&text);
    }

    #[test]
    fn signal_parse_never_panics(value in ".{0,20}") {
        let _ = signal::parse(&value);
    }

    #[test]
    fn numeric_signals_in_range_parse(n in 1i32..=31) {
        prop_assert_eq!(signal::parse(&n.to_string()).unwrap() as i32, n);
    }
}
