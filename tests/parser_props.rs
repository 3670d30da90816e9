//! Property tests: no input makes the hot path panic. Arbitrary bytes, and
//! real INVITEs with random bytes spliced in, go through parsing, TCP framing,
//! caller identification and both relay editors.

use bytes::Bytes;
use proptest::prelude::*;
use sipsentry::config::Config;
use sipsentry::number::Country;
use sipsentry::pipeline::label_lines;
use sipsentry::policy::Action;
use sipsentry::policy::{Policy, Rule};
use sipsentry::sip::caller;
use sipsentry::sip::message::{Message, frame_len};
use sipsentry::sip::relay::{self, LabelEdit, RequestEdit};

const INVITE: &str = "INVITE sip:+15551234567@pbx.example;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK776asdhds, SIP/2.0/TCP [2001:db8::1];branch=z9hG4bK2\r\n\
Max-Forwards: 70\r\n\
t: <sip:+15551234567@pbx.example>\r\n\
f: \"ACME \\\"X\\\"\" <sip:+15557654321;verstat=TN-Validation-Passed@carrier.example;user=phone>;tag=1\r\n\
P-Asserted-Identity: <tel:+1-555-765-4321>, \"A\" <sip:+15557654321@c>\r\n\
Remote-Party-ID: <sip:5550001111@c>;privacy=full\r\n\
Identity: eyJhbGciOiJFUzI1NiJ9.eyJhdHRlc3QiOiJBIn0.c2ln;ppt=shaken\r\n\
Route: <sip:127.0.0.1:5060;lr>, <sip:[::1]:5070;lr>\r\n\
Call-Info: <data:,>;purpose=info;type=spam\r\n\
X-Sipsentry-Score: 3\r\n\
i: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
Subject: folded\r\n  line\r\n\
l: 4\r\n\r\nv=0\n";

fn exercise(bytes: Vec<u8>, policy: &Policy, country: &Country) {
    let _ = frame_len(&bytes);
    let Ok(msg) = Message::parse(Bytes::from(bytes)) else {
        return;
    };
    let who = caller::identify(&msg, true, country);
    let _ = caller::identify(&msg, false, country);
    let decision = policy.decide(Rule::Threshold, Action::Tag, vec![], 1);
    let lines = label_lines(&decision, &policy.labels);
    let edit = RequestEdit {
        via_line: b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ss-1\r\n",
        source: "127.0.0.1:9".parse().unwrap(),
        new_ruri: who.e164.as_deref().map(|_| "sip:vm@127.0.0.1"),
        record_route: Some("Record-Route: <sip:127.0.0.1;lr>\r\n"),
        strip_labels: true,
        own_route: &relay::top_via(&msg).into_iter().collect::<Vec<_>>(),
        labels: Some(LabelEdit {
            lines: lines.as_bytes(),
            display_prefix: &policy.labels.display_prefix,
        }),
        verstat: Some("TN-Validation-Passed"),
    };
    let out = relay::forward_request(&msg, &edit);
    // What we relay must itself parse if the input did.
    assert!(
        Message::parse(out).is_ok(),
        "relayed message does not parse"
    );
    let _ = relay::forward_response(&msg);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let policy = Config::default().policy().unwrap();
        exercise(bytes, &policy, &policy.country.clone());
    }

    #[test]
    fn mutated_invites_never_panic(
        edits in proptest::collection::vec((0usize..INVITE.len(), any::<u8>(), 0usize..3), 1..8)
    ) {
        let mut bytes = INVITE.as_bytes().to_vec();
        for (pos, byte, kind) in edits {
            let pos = pos.min(bytes.len().saturating_sub(1));
            match kind {
                0 => bytes[pos] = byte,
                1 => bytes.insert(pos, byte),
                _ => { bytes.remove(pos); }
            }
        }
        let policy = Config::default().policy().unwrap();
        exercise(bytes, &policy, &policy.country.clone());
    }
}

#[test]
fn the_seed_invite_parses_and_relays() {
    let policy = Config::default().policy().unwrap();
    let msg = Message::parse(Bytes::from_static(INVITE.as_bytes())).unwrap();
    assert_eq!(
        caller::identify(&msg, true, &policy.country)
            .e164
            .as_deref(),
        Some("+15557654321")
    );
    exercise(INVITE.as_bytes().to_vec(), &policy, &policy.country.clone());
}
