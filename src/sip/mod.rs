//! SIP on the wire: framing and parsing ([`message`], [`header`], [`uri`]),
//! byte-faithful editing ([`splice`], [`relay`]), locally generated responses
//! ([`respond`]) and the one request it writes itself ([`cancel`]), caller identity ([`caller`]), INVITE transactions
//! ([`transaction`]), sockets ([`transport`], [`udp`] for the SIP thread) and the proxy logic ([`proxy`]).

pub mod caller;
pub mod cancel;
pub mod header;
pub mod message;
pub mod proxy;
pub mod relay;
pub mod respond;
pub mod splice;
pub mod transaction;
pub mod transport;
pub mod udp;
pub mod uri;
