//! RFC 4475 torture messages that apply to a proxy, written from the RFC text
//! (line ends are CRLF on the wire; `{UAC}` stands for the test UAC's address
//! so the answers to invalid messages can be observed).
//!
//! Valid messages must be relayed to the PBX; invalid ones must be answered
//! 400/505 (or dropped when they cannot be answered) and never reach the PBX;
//! and the proxy must keep working after all of them.

mod common;

use common::*;
use std::time::Duration;

fn wire(text: &str, uac: std::net::SocketAddr) -> String {
    text.replace('\n', "\r\n")
        .replace("{UAC}", &uac.to_string())
}

const SDP_150: &str = "v=0\no=mhandley 29739 7272939 IN IP4 192.0.2.3\ns=-\nc=IN IP4 192.0.2.4\nt=0 0\nm=audio 49217 RTP/AVP 0 12\nm=video 3227 RTP/AVP 31\na=rtpmap:31 LPC\n";

/// §3.1.1.1 wsinv: folding everywhere, LWS around separators, compact and
/// long names mixed, odd case, leading zeros, unknown headers.
fn wsinv() -> String {
    format!(
        "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : 150
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    {{UAC}};branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

{SDP_150}"
    )
}

const INTMETH: &str = "!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0
Via: SIP/2.0/UDP {UAC};branch=z9hG4bK-.!%66*_+`'~
To: \"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7F\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\u{440}\u{430}\u{431}\u{43e}\u{442}\u{430}\u{44e}\u{449}\u{438}\u{439}\";tag=_token~1'+`*%!-.
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~
Max-Forwards: 255
extensionHeader-!.%*+_`'~: \u{feff}\u{5927}\u{505c}\u{96fb}
Content-Length: 0

";

const ESC01: &str = "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP {UAC};branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: 150

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 49217 RTP/AVP 0 12
m=video 3227 RTP/AVP 31
a=rtpmap:31 LPC
";

const LWSDISP: &str = "OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP {UAC};branch=z9hG4bKkdjuw
l: 0

";

const SEMIURI: &str = "OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP {UAC};branch=z9hG4bKkdjuw
l: 0

";

const TRANSPORTS: &str = "OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID:  transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP {UAC};branch=z9hG4bKkdjuw
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
l: 0

";

const DBLREQ: &str = "REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP {UAC};branch=z9hG4bKkdjuw23492
Content-Length: 0

INVITE sip:joe@example.com SIP/2.0
t: sip:joe@example.com
From: sip:caller@example.net;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234
Content-Type: application/sdp
Content-Length: 150

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.15
s=-
c=IN IP4 192.0.2.15
t=0 0
m=audio 49217 RTP/AVP 0 12
m =video 3227 RTP/AVP 31
a=rtpmap:31 LPC
";

fn valid(uac: std::net::SocketAddr) -> Vec<(&'static str, String)> {
    let long_hdr = "x".repeat(4000);
    let longreq = format!(
        "INVITE sip:user@example.com SIP/2.0\nTo: \"I have a user name of extremeextremeextremeextremeextremeextremeextremeextremeextremeextremeextremeextremeextremeextremeextremeextremeextremeextremeextreme proportion\" <sip:user@example.com:6000;unknownparam1=verylonguri>\nFrom: sip:{long}@example.org;tag=12982424\nMax-Forwards: 70\nCall-ID: longreq.onereallyreallyreallyreallyreallylongcallid\nCSeq: 1 INVITE\nVia: SIP/2.0/UDP {{UAC}};branch=z9hG4bK-long\n{vias}X-Long: {long_hdr}\nContent-Length: 0\n\n",
        long = "amazinglylongcallername".repeat(10),
        vias = (0..30)
            .map(|i| format!("Via: SIP/2.0/UDP sip{i}.example.com;branch=z9hG4bK{i}\n"))
            .collect::<String>(),
    );
    vec![
        ("wsinv", wire(&wsinv(), uac)),
        ("intmeth", wire(INTMETH, uac)),
        ("esc01", wire(ESC01, uac)),
        ("lwsdisp", wire(LWSDISP, uac)),
        ("longreq", wire(&longreq, uac)),
        ("dblreq", wire(DBLREQ, uac)),
        ("semiuri", wire(SEMIURI, uac)),
        ("transports", wire(TRANSPORTS, uac)),
    ]
}

/// (name, message, expected answer: Some(code) or None for "dropped").
fn invalid() -> Vec<(&'static str, &'static str, Option<u16>)> {
    vec![
        (
            "badinv01",
            "INVITE sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=134161461246
Max-Forwards: 7
Call-ID: badinv01.0ha0isndaksdjasdf3234nas
CSeq: 8 INVITE
Via: SIP/2.0/UDP {UAC};;,;,,
Contact: \"Joe\" <sip:joe@example.org>;;;;
Content-Length: 0
Content-Type: application/sdp

",
            Some(400),
        ),
        (
            "clerr",
            "INVITE sip:user@example.com SIP/2.0
Max-Forwards: 80
To: sip:j.user@example.com
From: sip:caller@example.net;tag=93942939o2
Contact: <sip:caller@hungry.example.net>
Call-ID: clerr.0ha0isndaksdjweiafasdk3
CSeq: 8 INVITE
Via: SIP/2.0/UDP {UAC};branch=z9hG4bK-39234-23523
Content-Type: application/sdp
Content-Length: 9999

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.155
",
            Some(400),
        ),
        (
            "scalar02",
            "REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/TCP {UAC};branch=z9hG4bKkdjuw
Max-Forwards: 255
From: <sip:user@example.com>;tag=fa3r0o
To: <sip:user@example.com>
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
CSeq: 300 REGISTER
Contact: <sip:user@host129.example.com>;expires=-1
Content-Length: -999

",
            Some(400),
        ),
        (
            "scalarlg",
            "REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/TCP {UAC};branch=z9hG4bKkdjuw
Max-Forwards: 300
From: <sip:user@example.com>;tag=88888s
To: <sip:user@example.com>
Call-ID: scalarlg.98asdh@192.0.2.1
CSeq: 36893488147419103232 REGISTER
Contact: <sip:user@host129.example.com>;expires=280297596632815
Expires: 1152921504606846976
Content-Length: 0

",
            Some(400),
        ),
        (
            "quotbal",
            "INVITE sip:user@example.com SIP/2.0
To: \"Mr. J. User <sip:j.user@example.com>
From: sip:caller@example.net;tag=93334
Max-Forwards: 10
Call-ID: quotbal.aksdj
Contact: <sip:caller@host59.example.net>
CSeq: 8 INVITE
Via: SIP/2.0/UDP {UAC};branch=z9hG4bKkdjuw
Content-Length: 0

",
            Some(400),
        ),
        (
            "ltgtruri",
            "INVITE <sip:user@example.com> SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=39291
Max-Forwards: 23
Call-ID: ltgtruri.1@192.0.2.5
CSeq: 1 INVITE
Via: SIP/2.0/UDP {UAC};branch=z9hG4bKkdjuw
Content-Length: 0

",
            Some(400),
        ),
        (
            "lwsruri",
            "INVITE sip:user@example.com; lr SIP/2.0
To: sip:user@example.com;tag=3xfe-9921883-z9f
From: sip:caller@example.net;tag=231413434
Max-Forwards: 5
Call-ID: lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423
CSeq: 2130706432 INVITE
Via: SIP/2.0/UDP {UAC};branch=z9hG4bKkdjuw
Content-Length: 0

",
            Some(400),
        ),
        (
            "lwsstart",
            "INVITE  sip:user@example.com  SIP/2.0
Max-Forwards: 8
To: sip:user@example.com
From: sip:caller@example.net;tag=8814
Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com
CSeq: 1893884 INVITE
Via: SIP/2.0/UDP {UAC};branch=z9hG4bKkdjuw
Content-Length: 0

",
            Some(400),
        ),
        (
            "trws",
            "OPTIONS sip:remote-target@example.com SIP/2.0  
Via: SIP/2.0/TCP {UAC};branch=z9hG4bKkdjuw
To: <sip:remote-target@example.com>
From: <sip:local-resource@example.com>;tag=329429089
Call-ID: trws.oicu34958239neffasdhr2345r
Accept: application/sdp
CSeq: 238923 OPTIONS
Max-Forwards: 70
Content-Length: 0

",
            Some(400),
        ),
        (
            "escruri",
            "INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=341518
Max-Forwards: 7
Contact: <sip:caller@host39923.example.net>
Call-ID: escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5
CSeq: 149209342 INVITE
Via: SIP/2.0/UDP {UAC};branch=z9hG4bKkdjuw
Content-Length: 0

",
            Some(400),
        ),
        (
            "baddn",
            "OPTIONS sip:t.watson@example.org SIP/2.0
Via:     SIP/2.0/UDP {UAC};branch=z9hG4bKkdjuw
Max-Forwards:     70
From:    Bell, Alexander <sip:a.g.bell@example.com>;tag=43
To:      Watson, Thomas <sip:t.watson@example.org>
Call-ID: baddn.31415@c.example.com
Accept: application/sdp
CSeq:    3923239 OPTIONS
l: 0

",
            Some(400),
        ),
        (
            "badvers",
            "OPTIONS sip:t.watson@example.org SIP/7.0
Via:     SIP/7.0/UDP {UAC};branch=z9hG4bKkdjuw
Max-Forwards:     70
From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe
To:      T. Watson <sip:t.watson@example.org>
Call-ID: badvers.31417@c.example.com
CSeq:    1 OPTIONS
l: 0

",
            Some(505),
        ),
        (
            "mismatch01",
            "OPTIONS sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch01.dj0234sxdfl3
CSeq: 8 INVITE
Via: SIP/2.0/UDP {UAC};branch=z9hG4bKkdjuw
l: 0

",
            Some(400),
        ),
        (
            "mismatch02",
            "NEWMETHOD sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch02.dj0234sxdfl3
CSeq: 8 INVITE
Contact: <sip:caller@host.example.net>
Via: SIP/2.0/UDP {UAC};branch=z9hG4bKkdjuw
Content-Type: application/sdp
l: 0

",
            Some(400),
        ),
        (
            "insuf",
            "INVITE sip:user@example.com SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP {UAC};branch=z9hG4bKkdjuw
Content-Type: application/sdp
l: 0

",
            Some(400),
        ),
        (
            "bigcode",
            "SIP/2.0 4294967301 better not break the receiver
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i
CSeq: 353494 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>

",
            None,
        ),
        (
            "noreason-not-ours",
            "SIP/2.0 100 
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: noreason.asndj203insdf99223ndf
CSeq: 35 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>

",
            None,
        ),
    ]
}

#[tokio::test]
async fn valid_torture_messages_are_relayed() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, ""), |p| p).await;
    for (name, msg) in valid(uac.addr) {
        uac.send(proxy.addr, &msg).await;
        let got = loop {
            let m = uas
                .recv_within(WAIT)
                .await
                .unwrap_or_else(|| panic!("{name} was not relayed"))
                .0;
            if !m.starts_with("SIP/") {
                break m;
            }
        };
        let first_line = msg.split("\r\n").next().unwrap();
        assert!(got.starts_with(first_line), "{name}: relayed {got:?}");
        // Every header line but Max-Forwards keeps its bytes.
        let (_, rest) = split_proxy_via(&got);
        for line in msg.split("\r\n\r\n").next().unwrap().split("\r\n").skip(1) {
            if !line.to_ascii_lowercase().starts_with("max-forwards") {
                assert!(rest.contains(line), "{name}: header line {line:?} changed");
            }
        }
        if name == "dblreq" {
            assert!(
                !got.contains("INVITE sip:joe"),
                "dblreq: bytes after the body were relayed"
            );
        }
        // Drain Timer A retransmissions of INVITEs and the 100s to the UAC.
        while uas.recv_within(Duration::from_millis(50)).await.is_some() {}
        while uac.recv_within(Duration::from_millis(10)).await.is_some() {}
    }
    proxy.stop().await;
}

#[tokio::test]
async fn invalid_torture_messages_are_refused_and_never_reach_the_pbx() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, ""), |p| p).await;
    for (name, text, want) in invalid() {
        uac.send(proxy.addr, &wire(text, uac.addr)).await;
        let answer = uac
            .recv_within(Duration::from_millis(300))
            .await
            .map(|(m, _)| status(&m));
        assert_eq!(answer, want, "{name}");
        assert!(
            uas.silent_for(Duration::from_millis(50)).await.is_none(),
            "{name} reached the PBX"
        );
    }
    // Still serving.
    uac.send(
        proxy.addr,
        &invite(uac.addr, "UDP", "z9hG4bKafter", "<sip:+15557654321@c>", ""),
    )
    .await;
    assert_eq!(status(&uac.recv().await), 100);
    assert!(uas.recv().await.starts_with("INVITE "));
    proxy.stop().await;
}
