//! SIP, from the wire up, each layer using only those before it:
//!
//! - the wire: framing and parsing ([`message`], [`header`], [`uri`]),
//!   byte-faithful editing ([`splice`], [`relay`]), locally generated
//!   responses ([`respond`]) and the requests the proxy writes itself
//!   ([`cancel`]); who is calling ([`caller`]); copies for Homer
//!   ([`capture`]);
//! - [`transport`]: the sockets, framing of TCP and TLS streams, the SIP
//!   thread;
//! - [`next_hop`]: where initial requests go (RFC 3263), with health;
//! - [`transaction`]: the INVITE server transactions and their timers;
//! - [`proxy`]: the proxy core, which routes; call screening is behind its
//!   [`proxy::Screen`] trait.

pub mod caller;
pub mod cancel;
pub mod capture;
pub mod header;
pub mod message;
pub mod next_hop;
pub mod proxy;
pub mod relay;
pub mod respond;
pub mod splice;
pub mod transaction;
pub mod transport;
pub mod uri;
