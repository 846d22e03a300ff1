//! One write per request: a layer over ureq's transport (TCP, or TLS over TCP) that holds back a
//! transmitted request head until the body follows, and sends both together.
//!
//! ureq transmits the head and the body of a request separately; on loopback and on a LAN that is
//! two TCP segments, and the second doubles the kernel's work for a heartbeat (measured by
//! scripts/bench.sh). Held-back bytes are always sent before the transport waits for input, so a
//! request without a body, or one waiting for `100 Continue`, goes out unchanged.

use std::fmt;

use ureq::Error;
use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

/// Wraps whatever transport the connectors before it made.
#[derive(Debug, Default)]
pub struct OneWritePerRequest;

impl<In: Transport> Connector<In> for OneWritePerRequest {
    type Out = HeldBack<In>;

    fn connect(
        &self,
        _details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, Error> {
        Ok(chained.map(|inner| HeldBack {
            inner,
            held: Vec::new(),
        }))
    }
}

pub struct HeldBack<T> {
    inner: T,
    /// Bytes transmitted by ureq but not yet written: a request head waiting for its body.
    held: Vec<u8>,
}

impl<T: Transport> HeldBack<T> {
    fn write_held(&mut self, timeout: NextTimeout) -> Result<(), Error> {
        if self.held.is_empty() {
            return Ok(());
        }
        let length = self.held.len();
        self.inner.buffers().output()[..length].copy_from_slice(&self.held);
        self.held.clear();
        self.inner.transmit_output(length, timeout)
    }
}

impl<T: Transport> Transport for HeldBack<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        if self.held.is_empty() {
            // Possibly a head: hold it until the next transmit (its body) or the wait for an answer.
            let output = self.inner.buffers().output();
            self.held.extend_from_slice(&output[..amount]);
            return Ok(());
        }
        let held = self.held.len();
        let output = self.inner.buffers().output();
        if held + amount > output.len() {
            // Too large to join: what is held goes first, then this.
            self.write_held(timeout)?;
            return self.inner.transmit_output(amount, timeout);
        }
        output.copy_within(..amount, held);
        output[..held].copy_from_slice(&self.held);
        self.held.clear();
        self.inner.transmit_output(held + amount, timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        self.write_held(timeout)?;
        self.inner.await_input(timeout)
    }

    fn maybe_await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        self.write_held(timeout)?;
        self.inner.maybe_await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

impl<T: fmt::Debug> fmt::Debug for HeldBack<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldBack")
            .field("inner", &self.inner)
            .field("held", &self.held.len())
            .finish()
    }
}
