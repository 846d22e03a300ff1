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
            // Too large to join: what is held goes first, then this. Writing the held bytes
            // takes the output buffer, where this waits, so it is set aside meanwhile (only
            // for a request larger than the buffer, never a heartbeat's).
            let pending = output[..amount].to_vec();
            self.write_held(timeout)?;
            self.inner.buffers().output()[..amount].copy_from_slice(&pending);
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

/// `HeldBack` rests on ureq's `unversioned` transport API, which may change in any minor
/// release: these tests drive it both directly and through a real ureq `Agent`, over a fake
/// transport that records every write and wait, so an upgrade that changes how ureq writes a
/// request fails here rather than on the wire.
#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
    use ureq::unversioned::transport::LazyBuffers;

    use super::*;

    #[derive(Clone, PartialEq, Eq)]
    enum Event {
        Wrote(Vec<u8>),
        AwaitedInput,
        MaybeAwaitedInput,
    }

    impl fmt::Debug for Event {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Event::Wrote(bytes) => write!(f, "wrote {:?}", String::from_utf8_lossy(bytes)),
                Event::AwaitedInput => write!(f, "await_input"),
                Event::MaybeAwaitedInput => write!(f, "maybe_await_input"),
            }
        }
    }

    type Events = Arc<Mutex<Vec<Event>>>;

    /// The inner transport: records what reaches it; its first wait for input is answered
    /// with `answer`.
    #[derive(Debug)]
    struct Recorder {
        buffers: LazyBuffers,
        events: Events,
        answer: Vec<u8>,
    }

    impl Recorder {
        fn new(output_size: usize, answer: &[u8]) -> (Recorder, Events) {
            let events = Events::default();
            let recorder = Recorder {
                buffers: LazyBuffers::new(4096, output_size),
                events: Arc::clone(&events),
                answer: answer.to_vec(),
            };
            (recorder, events)
        }
    }

    impl Transport for Recorder {
        fn buffers(&mut self) -> &mut dyn Buffers {
            &mut self.buffers
        }

        fn transmit_output(&mut self, amount: usize, _timeout: NextTimeout) -> Result<(), Error> {
            let bytes = self.buffers.output()[..amount].to_vec();
            self.events.lock().unwrap().push(Event::Wrote(bytes));
            Ok(())
        }

        fn maybe_await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
            self.events.lock().unwrap().push(Event::MaybeAwaitedInput);
            if self.buffers.can_use_input() {
                return Ok(true);
            }
            self.fill_input(timeout)
        }

        fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
            self.events.lock().unwrap().push(Event::AwaitedInput);
            self.fill_input(timeout)
        }

        fn is_open(&mut self) -> bool {
            true
        }
    }

    impl Recorder {
        fn fill_input(&mut self, _timeout: NextTimeout) -> Result<bool, Error> {
            let answer = std::mem::take(&mut self.answer);
            self.buffers.input_append_buf()[..answer.len()].copy_from_slice(&answer);
            self.buffers.input_appended(answer.len());
            Ok(!answer.is_empty())
        }
    }

    /// The layer over a recorder whose output buffer holds `output_size` bytes, as
    /// `OneWritePerRequest::connect` makes it (the connector itself is driven through `Agent`
    /// below: ureq offers no way to make its `ConnectionDetails` outside a request).
    fn held_back(output_size: usize) -> (HeldBack<Recorder>, Events) {
        let (inner, events) = Recorder::new(output_size, b"");
        let held_back = HeldBack {
            inner,
            held: Vec::new(),
        };
        (held_back, events)
    }

    /// What ureq does for each piece of a request: writes it into the output buffer, then
    /// transmits that many bytes.
    fn transmit(transport: &mut impl Transport, bytes: &[u8]) {
        transport.buffers().output()[..bytes.len()].copy_from_slice(bytes);
        transport
            .transmit_output(bytes.len(), NextTimeout::default())
            .unwrap();
    }

    fn events(events: &Events) -> Vec<Event> {
        events.lock().unwrap().clone()
    }

    const HEAD: &[u8] =
        b"POST /api/v1/nodes/n/heartbeat HTTP/1.1\r\nhost: cp\r\ncontent-length: 13\r\n\r\n";
    const BODY: &[u8] = b"{\"cpu\":12.5}\n";

    #[test]
    fn a_head_is_held_until_its_body() {
        let (mut transport, written) = held_back(1024);
        transmit(&mut transport, HEAD);
        assert_eq!(events(&written), []);
    }

    #[test]
    fn head_and_body_go_out_in_one_write() {
        let (mut transport, written) = held_back(1024);
        transmit(&mut transport, HEAD);
        transmit(&mut transport, BODY);
        assert_eq!(events(&written), [Event::Wrote([HEAD, BODY].concat())]);
    }

    #[test]
    fn head_and_body_too_large_to_join_go_out_in_two_writes_in_order() {
        // Room for either, not both.
        let (mut transport, written) = held_back(HEAD.len() + BODY.len() - 1);
        transmit(&mut transport, HEAD);
        transmit(&mut transport, BODY);
        assert_eq!(
            events(&written),
            [Event::Wrote(HEAD.to_vec()), Event::Wrote(BODY.to_vec())]
        );
    }

    #[test]
    fn held_bytes_go_out_before_awaiting_input() {
        let (mut transport, written) = held_back(1024);
        transmit(&mut transport, HEAD);
        transport.await_input(NextTimeout::default()).unwrap();
        assert_eq!(
            events(&written),
            [Event::Wrote(HEAD.to_vec()), Event::AwaitedInput]
        );
    }

    #[test]
    fn held_bytes_go_out_before_maybe_awaiting_input() {
        let (mut transport, written) = held_back(1024);
        transmit(&mut transport, HEAD);
        transport.maybe_await_input(NextTimeout::default()).unwrap();
        assert_eq!(
            events(&written),
            [Event::Wrote(HEAD.to_vec()), Event::MaybeAwaitedInput]
        );
    }

    #[test]
    fn nothing_held_nothing_written_before_awaiting_input() {
        let (mut transport, written) = held_back(1024);
        transport.await_input(NextTimeout::default()).unwrap();
        assert_eq!(events(&written), [Event::AwaitedInput]);
    }

    /// After a joined write the layer holds again: a second request on the kept-alive
    /// connection goes out in one write too.
    #[test]
    fn each_request_on_a_connection_goes_out_in_one_write() {
        let (mut transport, written) = held_back(1024);
        for _ in 0..2 {
            transmit(&mut transport, HEAD);
            transmit(&mut transport, BODY);
            transport.await_input(NextTimeout::default()).unwrap();
        }
        let request = Event::Wrote([HEAD, BODY].concat());
        assert_eq!(
            events(&written),
            [
                request.clone(),
                Event::AwaitedInput,
                request,
                Event::AwaitedInput
            ]
        );
    }

    /// Connects every request to a fresh `Recorder` (sharing one event log) answering `200`.
    #[derive(Debug)]
    struct RecorderConnector(Events);

    impl Connector<()> for RecorderConnector {
        type Out = Recorder;

        fn connect(
            &self,
            _details: &ConnectionDetails,
            _chained: Option<()>,
        ) -> Result<Option<Recorder>, Error> {
            Ok(Some(Recorder {
                buffers: LazyBuffers::new(4096, 4096),
                events: Arc::clone(&self.0),
                answer: b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            }))
        }
    }

    #[derive(Debug)]
    struct Loopback;

    impl Resolver for Loopback {
        fn resolve(
            &self,
            _uri: &ureq::http::Uri,
            _config: &ureq::config::Config,
            _timeout: NextTimeout,
        ) -> Result<ResolvedSocketAddrs, Error> {
            let mut addresses = self.empty();
            addresses.push(([127, 0, 0, 1], 80).into());
            Ok(addresses)
        }
    }

    /// A real ureq agent over `OneWritePerRequest` and a recorder, chained as
    /// `client::ControlPlane` chains it over TCP.
    fn agent() -> (ureq::Agent, Events) {
        let events = Events::default();
        let connector = RecorderConnector(Arc::clone(&events)).chain(OneWritePerRequest);
        let agent =
            ureq::Agent::with_parts(ureq::Agent::config_builder().build(), connector, Loopback);
        (agent, events)
    }

    /// The writes before the first wait for input, and that wait.
    fn first_exchange(events: &Events) -> (Vec<Vec<u8>>, Event) {
        let events = events.lock().unwrap();
        let wait = events
            .iter()
            .position(|event| !matches!(event, Event::Wrote(_)))
            .unwrap_or_else(|| panic!("ureq never waited for the answer: {events:#?}"));
        let writes = events[..wait]
            .iter()
            .map(|event| match event {
                Event::Wrote(bytes) => bytes.clone(),
                _ => unreachable!(),
            })
            .collect();
        (writes, events[wait].clone())
    }

    #[test]
    fn ureq_sends_a_post_as_one_write_before_reading_the_answer() {
        let (agent, events) = agent();
        let mut response = agent
            .post("http://control-plane/api/v1/nodes/n/heartbeat")
            .content_type("application/json")
            .send(BODY)
            .unwrap();
        assert_eq!(response.body_mut().read_to_string().unwrap(), "ok");
        let (writes, _) = first_exchange(&events);
        assert_eq!(writes.len(), 1, "{writes:?}");
        let request = String::from_utf8(writes[0].clone()).unwrap();
        assert!(
            request.starts_with("POST /api/v1/nodes/n/heartbeat HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.ends_with(&format!("\r\n\r\n{}", std::str::from_utf8(BODY).unwrap())),
            "{request}"
        );
    }

    #[test]
    fn ureq_sends_a_request_without_body_unchanged() {
        let (agent, events) = agent();
        let mut response = agent.get("http://control-plane/health").call().unwrap();
        assert_eq!(response.body_mut().read_to_string().unwrap(), "ok");
        let (writes, _) = first_exchange(&events);
        assert_eq!(writes.len(), 1, "{writes:?}");
        let request = String::from_utf8(writes[0].clone()).unwrap();
        assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request}");
        assert!(request.ends_with("\r\n\r\n"), "{request}");
    }
}
