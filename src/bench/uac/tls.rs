//! TLS toward a target without a runtime: rustls over a blocking socket
//! that the UAC's poll loop watches (through a duplicate of its descriptor).
//! A readable socket is read once; every record that read completed is
//! decrypted at once, so no plaintext waits inside rustls for a wake-up
//! that will not come.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConnection;
use rustls_pki_types::ServerName;

pub(super) struct TlsConn {
    conn: ClientConnection,
    sock: TcpStream,
}

impl TlsConn {
    /// Connects and completes the handshake, verifying the target's
    /// certificate for its IP address.
    pub(super) fn connect(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> io::Result<(TlsConn, TcpStream)> {
        let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        sock.set_nodelay(true)?;
        let name = ServerName::IpAddress(addr.ip().into());
        let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)?;
        }
        let watch = sock.try_clone()?;
        Ok((TlsConn { conn, sock }, watch))
    }

    pub(super) fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.conn.writer().write_all(bytes)?;
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }

    /// One read from the (readable) socket; the plaintext it completed is
    /// appended to `into`. False once the target closed the connection.
    pub(super) fn read(&mut self, into: &mut Vec<u8>) -> io::Result<bool> {
        if self.conn.read_tls(&mut self.sock)? == 0 {
            return Ok(false);
        }
        self.conn.process_new_packets().map_err(io::Error::other)?;
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.conn.reader().read(&mut buf) {
                Ok(0) => return Ok(false),
                Ok(n) => into.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(true)
    }
}
