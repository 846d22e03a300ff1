//! Sockets and threads: the accept loop, one thread per connection, the per-connection request
//! loop, and an orderly stop that closes the listener and every open connection.
//!
//! The request loop is written against [`Transport`] rather than `TcpStream`, so that an HTTPS
//! variant only has to wrap the accepted socket (e.g. in `rustls::StreamOwned`) and implement
//! `Transport` for the wrapper.

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use socket2::SockRef;

use crate::app::App;
use crate::http::{self, Framing, Head, MAX_BODY, ReadError, Response};
use crate::ws::{self, Upgrade};

/// A byte stream a connection is served over, with access to the TCP socket underneath for
/// what only a socket can do (timeouts, linger, half-close).
pub(crate) trait Transport: Read + Write {
    fn socket(&self) -> &TcpStream;
}

impl Transport for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

/// HTTPS: the same exchange inside a rustls server session. The handshake runs on the first read,
/// so a client that fails it (untrusted, no client certificate) simply ends the connection.
impl Transport for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn socket(&self) -> &TcpStream {
        &self.sock
    }
}

/// What the connection does with a request once the application has decided.
#[derive(Debug)]
pub(crate) enum Reply {
    Send(Response),
    /// A success head announcing `len` bytes, then that many bytes streamed.
    Huge {
        status: u16,
        len: u64,
    },
    /// Say nothing for that long, then close.
    Stall(Duration),
    /// Close with a TCP RST.
    Reset,
    /// `101 Switching Protocols` with this `Sec-WebSocket-Accept`, then a WebSocket.
    Upgrade {
        accept: String,
        upgrade: Upgrade,
    },
}

impl Reply {
    /// The status recorded in the request log: 0 when nothing is answered.
    pub fn logged_status(&self) -> u16 {
        match self {
            Reply::Send(r) => r.status,
            Reply::Huge { status, .. } => *status,
            Reply::Stall(_) | Reply::Reset => 0,
            Reply::Upgrade { .. } => 101,
        }
    }
}

/// Set once when the server stops; lets stalls end early instead of holding `Drop` up.
#[derive(Default)]
pub(crate) struct StopSignal {
    stopped: Mutex<bool>,
    changed: Condvar,
}

impl StopSignal {
    fn set(&self) {
        *self.stopped.lock().unwrap() = true;
        self.changed.notify_all();
    }

    fn is_set(&self) -> bool {
        *self.stopped.lock().unwrap()
    }

    /// Sleeps for `d`, or less if the server stops meanwhile.
    fn sleep(&self, d: Duration) {
        let stopped = self.stopped.lock().unwrap();
        drop(
            self.changed
                .wait_timeout_while(stopped, d, |s| !*s)
                .unwrap(),
        );
    }
}

/// The open connections, kept (as duplicated handles) so that stopping can shut them down.
#[derive(Default)]
struct Connections {
    closed: bool,
    open: HashMap<u64, TcpStream>,
}

/// Everything the accept loop and the connection threads share.
pub(crate) struct Shared {
    pub app: App,
    stop: StopSignal,
    connections: Mutex<Connections>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    next_connection: AtomicU64,
    panics: AtomicUsize,
    keep_alive_timeout: Mutex<Option<Duration>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS handshakes completed: (full, resumed).
    handshakes: Mutex<(u64, u64)>,
}

impl Shared {
    /// Whether the server is stopping (long-lived connections end when it is).
    pub fn is_stopping(&self) -> bool {
        self.stop.is_set()
    }

    pub fn tls_handshakes(&self) -> (u64, u64) {
        *self.handshakes.lock().unwrap()
    }

    pub fn open_connections(&self) -> usize {
        self.connections.lock().unwrap().open.len()
    }

    pub fn connection_panics(&self) -> usize {
        self.panics.load(Ordering::SeqCst)
    }

    pub fn set_keep_alive_timeout(&self, timeout: Option<Duration>) {
        // A socket refuses a zero read timeout; the shortest one means the same here.
        let timeout = timeout.map(|t| t.max(Duration::from_millis(1)));
        *self.keep_alive_timeout.lock().unwrap() = timeout;
    }

    fn spawn_connection(self: &Arc<Self>, stream: TcpStream) {
        // Responses go out in one write each, so Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        let Ok(handle) = stream.try_clone() else {
            return;
        };
        let id = self.next_connection.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let mut connections = self.connections.lock().unwrap();
            if connections.closed {
                return;
            }
            connections.open.insert(id, handle);
        }
        let shared = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name(format!("control-plane-conn-{id}"))
            .spawn(move || {
                let mut stream = stream;
                // Declared after `stream`, so dropped before it: the registry's duplicate
                // handle must be gone when `stream` closes, or the socket would stay open (and
                // a `Reset` would not reset anything).
                let _guard = ConnectionGuard {
                    shared: &shared,
                    id,
                };
                match &shared.tls {
                    None => serve(&mut stream, id, &shared),
                    Some(config) => {
                        let Ok(session) = rustls::ServerConnection::new(Arc::clone(config)) else {
                            return;
                        };
                        let Ok(socket) = stream.try_clone() else {
                            return;
                        };
                        let mut tls = rustls::StreamOwned::new(session, socket);
                        serve(&mut tls, id, &shared);
                        let mut handshakes = shared.handshakes.lock().unwrap();
                        match tls.conn.handshake_kind() {
                            Some(rustls::HandshakeKind::Resumed) => handshakes.1 += 1,
                            Some(_) if !tls.conn.is_handshaking() => handshakes.0 += 1,
                            _ => {}
                        }
                    }
                }
            });
        match spawned {
            Ok(worker) => {
                let mut workers = self.workers.lock().unwrap();
                workers.retain(|w| !w.is_finished());
                workers.push(worker);
            }
            Err(_) => {
                self.connections.lock().unwrap().open.remove(&id);
            }
        }
    }
}

/// Deregisters a connection when its thread ends, and counts the threads that panicked.
struct ConnectionGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.shared.panics.fetch_add(1, Ordering::SeqCst);
        }
        self.shared
            .connections
            .lock()
            .unwrap()
            .open
            .remove(&self.id);
    }
}

/// A listening server. Dropping it stops it.
pub(crate) struct Server {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// A duplicate of the accept loop's listener, to wake that loop up when stopping.
    listener: Option<TcpListener>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    pub fn bind(
        addr: impl ToSocketAddrs,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<Server> {
        Server::bind_app(addr, tls, App::new())
    }

    pub fn bind_app(
        addr: impl ToSocketAddrs,
        tls: Option<Arc<rustls::ServerConfig>>,
        app: App,
    ) -> io::Result<Server> {
        // std sets SO_REUSEADDR on Unix, so a test can stop a server and start another on the
        // same port at once, despite connections in TIME_WAIT.
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let wake = listener.try_clone()?;
        let shared = Arc::new(Shared {
            app,
            stop: StopSignal::default(),
            connections: Mutex::default(),
            workers: Mutex::default(),
            next_connection: AtomicU64::new(0),
            panics: AtomicUsize::new(0),
            keep_alive_timeout: Mutex::new(None),
            tls,
            handshakes: Mutex::default(),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("control-plane-accept-{}", addr.port()))
                .spawn(move || accept_loop(listener, shared))?
        };
        Ok(Server {
            shared,
            addr,
            listener: Some(wake),
            acceptor: Some(acceptor),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Stops accepting, shuts every open connection down, and waits for all threads. The port
    /// is free again when this returns.
    pub fn stop(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        self.shared.stop.set();
        {
            let mut connections = self.shared.connections.lock().unwrap();
            connections.closed = true;
            for stream in connections.open.values() {
                // Wakes the connection's thread from a blocking read or write.
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        if let Some(listener) = self.listener.take() {
            // On Linux, shutting a listening socket down wakes a thread blocked in accept().
            let _ = SockRef::from(&listener).shutdown(Shutdown::Both);
            // Elsewhere, a connection does; refused is fine (it means the socket is down).
            let _ = TcpStream::connect_timeout(&loopback(self.addr), Duration::from_millis(200));
        }
        let _ = acceptor.join();
        let workers = std::mem::take(&mut *self.shared.workers.lock().unwrap());
        for worker in workers {
            let _ = worker.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where to connect to reach a listener bound to `addr` (a wildcard address means loopback).
fn loopback(addr: SocketAddr) -> SocketAddr {
    let mut target = addr;
    if addr.ip().is_unspecified() {
        target.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    target
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for accepted in listener.incoming() {
        if shared.stop.is_set() {
            break;
        }
        match accepted {
            Ok(stream) => shared.spawn_connection(stream),
            // Out of file descriptors and the like: back off instead of spinning.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Serves requests on one connection until the client closes it, asks to, or a reply ends it.
fn serve<S: Transport>(stream: &mut S, conn: u64, shared: &Shared) {
    let mut io = BufReader::new(stream);
    loop {
        if shared.stop.is_set() {
            return;
        }
        // The keep-alive timeout applies while waiting for the next request (as in uvicorn).
        let idle = *shared.keep_alive_timeout.lock().unwrap();
        let _ = io.get_ref().socket().set_read_timeout(idle);
        let head = match http::read_head(&mut io) {
            Ok(head) => head,
            Err(e) => return refuse(&mut io, conn, None, e, shared),
        };
        let _ = io.get_ref().socket().set_read_timeout(None);
        let body = match read_body(&mut io, &head) {
            Ok(body) => body,
            Err(e) => return refuse(&mut io, conn, Some(&head), e, shared),
        };
        let close = !head.keep_alive();
        let finished = match shared.app.handle(conn, &head, body) {
            Reply::Send(response) => send(io.get_mut(), &head, &response, close).is_err() || close,
            Reply::Huge { status, len } => {
                stream_huge(io.get_mut(), status, len, close, &shared.stop).is_err() || close
            }
            Reply::Stall(d) => {
                shared.stop.sleep(d);
                true
            }
            Reply::Reset => {
                // With a zero linger time, close() sends RST instead of FIN.
                let _ = SockRef::from(io.get_ref().socket()).set_linger(Some(Duration::ZERO));
                true
            }
            Reply::Upgrade { accept, upgrade } => {
                if http::write_switching_protocols(io.get_mut(), &accept).is_err() {
                    // The relay registered the connection already: let it end at once.
                    ws::serve_nothing(upgrade, shared);
                    return;
                }
                // What the client sent right after its handshake is in the reader's buffer.
                let buffered = io.buffer().to_vec();
                ws::serve(io.into_inner(), buffered, upgrade, shared);
                return;
            }
        };
        if finished {
            return;
        }
    }
}

fn read_body<S: Transport>(io: &mut BufReader<&mut S>, head: &Head) -> Result<Vec<u8>, ReadError> {
    let framing = http::framing(head)?;
    // Refuse an announced oversized body before the client sends it.
    if let Framing::Length(n) = framing
        && n > MAX_BODY
    {
        return Err(ReadError::BodyTooLarge);
    }
    if framing != Framing::None && head.expects_continue() {
        http::write_continue(io.get_mut())?;
    }
    http::read_body(io, framing)
}

fn send<W: Write>(w: &mut W, head: &Head, response: &Response, close: bool) -> io::Result<()> {
    if head.method == "HEAD" {
        // A HEAD answer has the head a GET would get, and no body.
        let len = response.body.len() as u64;
        http::write_head(w, response.status, &response.headers, len, close)?;
        w.flush()
    } else {
        http::write_response(w, response, close)
    }
}

/// Answers a request that could not be read whole, then closes the connection.
fn refuse<S: Transport>(
    io: &mut BufReader<&mut S>,
    conn: u64,
    head: Option<&Head>,
    error: ReadError,
    shared: &Shared,
) {
    let response = match error {
        // The client went away or the connection broke: nobody to answer.
        ReadError::Eof | ReadError::Io => return,
        // uvicorn says only the first sentence; the reason helps whoever debugs the client.
        ReadError::Malformed(why) => Response::new(
            400,
            "text/plain; charset=utf-8",
            format!("Invalid HTTP request received: {why}."),
        ),
        ReadError::HeadTooLarge => Response::new(
            431,
            "text/plain; charset=utf-8",
            "Request header fields too large.",
        ),
        ReadError::BodyTooLarge => Response::detail(413, "Request body too large"),
    };
    if let Some(head) = head {
        shared.app.record_refused(conn, head, &response);
    }
    if http::write_response(io.get_mut(), &response, true).is_ok() {
        lingering_close(io);
    }
}

/// Half-closes, then reads and discards what the client is still sending for a moment. Closing
/// a socket with unread data makes the kernel send RST, which can destroy the error response
/// before the client has read it.
fn lingering_close<S: Transport>(io: &mut BufReader<&mut S>) {
    let socket = io.get_ref().socket();
    let _ = socket.shutdown(Shutdown::Write);
    let _ = socket.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = io::copy(&mut io.take(4 * MAX_BODY), &mut io::sink());
}

/// Streams `len` bytes of `a` after a head announcing them. Fails, quietly, when the client
/// hangs up (EPIPE/ECONNRESET; std sends with MSG_NOSIGNAL, so no SIGPIPE) or the server stops.
fn stream_huge<W: Write>(
    w: &mut W,
    status: u16,
    len: u64,
    close: bool,
    stop: &StopSignal,
) -> io::Result<()> {
    static CHUNK: [u8; 64 * 1024] = [b'a'; 64 * 1024];
    let headers = [("content-type".to_string(), "application/json".to_string())];
    http::write_head(w, status, &headers, len, close)?;
    let mut left = len;
    while left > 0 {
        if stop.is_set() {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = left.min(CHUNK.len() as u64) as usize;
        w.write_all(&CHUNK[..n])?;
        left -= n as u64;
    }
    w.flush()
}
