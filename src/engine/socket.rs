//! Connecting to the engine's unix socket without waiting on it.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, UnixAddr, connect as connect_fd, socket,
};

/// Connects without blocking. std's `UnixStream::connect` waits, without any timeout, while
/// the engine's listen queue is full, which is what an engine that stopped accepting (a
/// stopped or deadlocked daemon) looks like after a hundred heartbeats; a non-blocking connect
/// fails at once with EAGAIN instead. The stream it returns blocks again (with the caller's
/// timeouts) for reads and writes.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    let stream = connect_nonblocking(path)?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Connects as `connect` does, and leaves the stream non-blocking, as async-io wants it. A unix
/// socket's connect completes or fails at once: there is no connect in progress to wait for.
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let address = UnixAddr::new(path).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket path is longer than 107 bytes or holds a NUL byte",
        )
    })?;
    let socket = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    connect_fd(std::os::fd::AsRawFd::as_raw_fd(&socket), &address)?;
    Ok(UnixStream::from(socket))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn connects_to_a_listener_and_refuses_what_is_not_one() {
        let dir = std::env::temp_dir().join(format!("miaas-socket-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("engine.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let stream = connect(&path).unwrap();
        let (_accepted, _) = listener.accept().unwrap();
        // Blocking again: a read with a timeout waits rather than failing with EAGAIN at once.
        stream
            .set_read_timeout(Some(std::time::Duration::from_millis(20)))
            .unwrap();
        let error = std::io::Read::read(&mut &stream, &mut [0u8; 1]).unwrap_err();
        assert!(matches!(
            error.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        assert!(connect(&path).is_err());
        let long = dir.join("x".repeat(120));
        assert_eq!(
            connect(&long).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
