//! The per-INVITE work on one core: parse, identify the caller, run the
//! screening phases, and splice the relayed message. Target: ≤ 5 µs for a
//! typical 1 KB INVITE. rsip's full parse is measured alongside as the
//! baseline our own hot path replaces.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sipsentry::config::Config;
use sipsentry::pipeline::label_lines;
use sipsentry::pipeline::{CallCtx, Pipeline};
use sipsentry::reputation::{Evidence, LocalSource, Source};
use sipsentry::sip::caller;
use sipsentry::sip::message::Message;
use sipsentry::sip::relay::{self, LabelEdit, RequestEdit};

/// A typical carrier INVITE: ~1 KB with SDP.
const INVITE: &str = "INVITE sip:+15551234567@pbx.example.com;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK-524287-1---77ba2a3c4a8cf1f9;rport\r\n\
Max-Forwards: 69\r\n\
Contact: <sip:+15557654321@198.51.100.10:5060;transport=udp>\r\n\
To: <sip:+15551234567@pbx.example.com;user=phone>\r\n\
From: \"ACME CORP\" <sip:+15557654321@carrier.example;user=phone>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710-2f7c1d@198.51.100.10\r\n\
CSeq: 314159 INVITE\r\n\
P-Asserted-Identity: <sip:+15557654321;verstat=TN-Validation-Passed@carrier.example;user=phone>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, REFER, NOTIFY, INFO\r\n\
Supported: 100rel, timer, replaces, norefersub\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Min-SE: 90\r\n\
User-Agent: CarrierSBC/4.2\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 372\r\n\
\r\n\
v=0\r\n\
o=- 3912345678 3912345678 IN IP4 198.51.100.10\r\n\
s=SBC call\r\n\
c=IN IP4 198.51.100.20\r\n\
t=0 0\r\n\
m=audio 32768 RTP/AVP 0 8 18 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=maxptime:40\r\n\
a=sendrecv\r\n\
a=rtcp:32769\r\n\
a=silenceSupp:off - - - -\r\n\
a=x-carrier-trace:0af3c9\r\n";

struct OneNumber;
impl LocalSource for OneNumber {
    fn lookup(&self, e164: &str) -> Option<Evidence> {
        (e164 == "+15557654321").then(|| Evidence {
            source: Source::HiyaCache,
            score: 75,
            category: Some("Telemarketer".into()),
            cached: false,
            latency_us: 0,
            raw: Default::default(),
        })
    }
}

/// The edits the proxy makes for a relayed INVITE.
fn edit<'a>(
    via: &'a [u8],
    source: std::net::SocketAddr,
    strip_labels: bool,
    labels: Option<LabelEdit<'a>>,
) -> RequestEdit<'a> {
    RequestEdit {
        via_line: via,
        source,
        new_ruri: None,
        record_route: None,
        strip_labels,
        own_route: &[],
        labels,
        verstat: None,
    }
}

fn invite_path(c: &mut Criterion) {
    let bytes = Bytes::from_static(INVITE.as_bytes());
    assert!(
        bytes.len() > 900 && bytes.len() < 1200,
        "typical INVITE is ~1 KB, got {}",
        bytes.len()
    );
    let config = Config::default();
    let pipeline =
        Pipeline::new(Arc::new(config.policy().unwrap())).with_local(Arc::new(OneNumber));
    let country = pipeline.policy().country;
    let source = "198.51.100.10:5060".parse().unwrap();
    let via = b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-ss-0123456789abcdef01234567\r\n";

    let mut g = c.benchmark_group("invite");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| Message::parse(black_box(bytes.clone())).unwrap())
    });
    g.bench_function("rsip_parse_baseline", |b| {
        b.iter(|| rsip::SipMessage::try_from(black_box(INVITE)).unwrap())
    });
    let msg = Message::parse(bytes.clone()).unwrap();
    g.bench_function("identify_caller", |b| {
        b.iter(|| caller::identify(black_box(&msg), true, &country))
    });
    g.bench_function("decide_only", |b| {
        b.iter(|| {
            let who = caller::identify(&msg, true, &country);
            let mut ctx = CallCtx::new(String::new(), source, who, String::new());
            pipeline.screen_now(&mut ctx).unwrap()
        })
    });
    let who = caller::identify(&msg, true, &country);
    let mut ctx = CallCtx::new(String::new(), source, who, String::new());
    let decision = pipeline.screen_now(&mut ctx).unwrap();
    let policy = pipeline.policy();
    g.bench_function("splice_tag_only", |b| {
        b.iter(|| {
            let lines = label_lines(&decision, &policy.labels);
            let labels = LabelEdit {
                lines: lines.as_bytes(),
                display_prefix: &policy.labels.display_prefix,
            };
            relay::forward_request(black_box(&msg), &edit(via, source, false, Some(labels)))
        })
    });
    g.bench_function("parse_decide_splice_tag", |b| {
        b.iter(|| {
            let msg = Message::parse(black_box(bytes.clone())).unwrap();
            let who = caller::identify(&msg, true, &country);
            let mut ctx = CallCtx::new(String::new(), source, who, String::new());
            let decision = pipeline.screen_now(&mut ctx).unwrap();
            let lines = label_lines(&decision, &policy.labels);
            let labels = LabelEdit {
                lines: lines.as_bytes(),
                display_prefix: &policy.labels.display_prefix,
            };
            relay::forward_request(&msg, &edit(via, source, false, Some(labels)))
        })
    });
    g.bench_function("parse_decide_splice_pass", |b| {
        let unknown = Bytes::from(INVITE.replace("+15557654321", "+15550000000"));
        b.iter(|| {
            let msg = Message::parse(black_box(unknown.clone())).unwrap();
            let who = caller::identify(&msg, true, &country);
            let mut ctx = CallCtx::new(String::new(), source, who, String::new());
            let _decision = pipeline.screen_now(&mut ctx).unwrap();
            relay::forward_request(&msg, &edit(via, source, true, None))
        })
    });
    g.finish();
}

criterion_group!(benches, invite_path);
criterion_main!(benches);
