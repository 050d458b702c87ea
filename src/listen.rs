//! The socket `serve` listens on: one handed over by a service manager
//! (systemd's socket activation), or one bound with `SO_REUSEPORT` so that a
//! second instance can bind the same address while the first one drains.
//!
//! With socket activation every instance accepts from the one queue the
//! manager holds, so an instance that stops leaves waiting connections to the
//! next. With `SO_REUSEPORT` each instance has its own queue, and on Linux the
//! connections still waiting in a closing instance's queue are reset (see the
//! README, "Operating: restarts and deploys").

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use tokio::net::TcpListener;

/// The variable a service manager sets to the number of sockets it passes, from fd 3 on.
pub const LISTEN_FDS: &str = "LISTEN_FDS";
/// The variable naming the process the sockets are meant for (optional).
pub const LISTEN_PID: &str = "LISTEN_PID";

/// How many connections the kernel queues for a socket we bind ourselves.
const BACKLOG: i32 = 1024;

/// Where the listening socket came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// fd 3, passed by a service manager (`LISTEN_FDS`).
    Activated,
    /// Bound here with `SO_REUSEPORT` and `SO_REUSEADDR`.
    ReusePort,
}

/// A listening socket ready for the server.
#[derive(Debug)]
pub struct Listening {
    pub listener: TcpListener,
    pub origin: Origin,
}

/// What the environment asks for: whether fd 3 is ours to use.
///
/// Pure: the two variables' values and our pid in. `Ok(false)` when no
/// socket was passed; an error names the variable that is wrong.
pub fn activation(listen_fds: Option<&str>, listen_pid: Option<&str>, pid: u32) -> anyhow::Result<bool> {
    let Some(fds) = listen_fds.filter(|v| !v.is_empty()) else {
        return Ok(false);
    };
    let n: u32 = fds.trim().parse().map_err(|_| anyhow::anyhow!("{LISTEN_FDS}={fds:?} is not a number"))?;
    if n == 0 {
        bail!("{LISTEN_FDS}=0: the service manager passed no socket");
    }
    if let Some(owner) = listen_pid.filter(|v| !v.is_empty()) {
        let owner: u32 = owner.trim().parse().map_err(|_| anyhow::anyhow!("{LISTEN_PID}={owner:?} is not a pid"))?;
        if owner != pid {
            bail!(
                "{LISTEN_PID}={owner} but this process is {pid}: the sockets in {LISTEN_FDS} were passed to another \
                 process (unset both variables to bind the address yourself)"
            );
        }
    }
    Ok(true)
}

/// Opens the listener: the passed socket when `LISTEN_FDS` is set (then
/// `listen` is not used), else `listen` bound with `SO_REUSEPORT`. Logs which.
pub fn open(listen: SocketAddr) -> anyhow::Result<Listening> {
    let fds = std::env::var(LISTEN_FDS).ok();
    let pid_var = std::env::var(LISTEN_PID).ok();
    if activation(fds.as_deref(), pid_var.as_deref(), std::process::id())? {
        let listener = take_activated()?;
        let addr = listener.local_addr().with_context(|| format!("reading the address of fd 3 ({LISTEN_FDS})"))?;
        if fds.as_deref().is_some_and(|n| n.trim() != "1") {
            tracing::warn!(listen_fds = fds.as_deref(), "several sockets passed; only fd 3 is used");
        }
        if addr != listen {
            tracing::info!(%addr, configured = %listen, "the passed socket's address wins over `listen`");
        }
        tracing::info!(%addr, "listening on the socket passed by the service manager (fd 3, {LISTEN_FDS})");
        return Ok(Listening { listener, origin: Origin::Activated });
    }
    let listener = bind_reuseport(listen)?;
    tracing::info!(addr = %listen, "listening on a socket bound with SO_REUSEPORT");
    Ok(Listening { listener, origin: Origin::ReusePort })
}

/// Takes fd 3. `listenfd` does the one unsafe step (adopting a raw fd), which
/// this workspace forbids in its own code; it also checks that the fd is a
/// TCP socket, marks it close-on-exec and removes the two variables, so a
/// child process does not take the socket for its own.
fn take_activated() -> anyhow::Result<TcpListener> {
    let std_listener = listenfd::ListenFd::from_env()
        .take_tcp_listener(0)
        .with_context(|| format!("fd 3 ({LISTEN_FDS}) is not a usable TCP socket"))?
        .with_context(|| format!("{LISTEN_FDS} is set but fd 3 was not passed to this process"))?;
    let listening = socket2::SockRef::from(&std_listener)
        .is_listener()
        .with_context(|| format!("checking that fd 3 ({LISTEN_FDS}) listens"))?;
    if !listening {
        bail!("fd 3 ({LISTEN_FDS}) is a TCP socket but not a listening one");
    }
    std_listener.set_nonblocking(true).with_context(|| format!("making fd 3 ({LISTEN_FDS}) non-blocking"))?;
    TcpListener::from_std(std_listener).with_context(|| format!("registering fd 3 ({LISTEN_FDS}) with the runtime"))
}

/// Binds `addr` so that another process of the same user can bind it too
/// while this one runs (`SO_REUSEPORT`); the kernel spreads new connections
/// over the instances.
pub fn bind_reuseport(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = bind_reuseport_std(addr)?;
    listener.set_nonblocking(true).with_context(|| format!("binding {addr} (listen)"))?;
    TcpListener::from_std(listener).with_context(|| format!("binding {addr} (listen)"))
}

/// [`bind_reuseport`] without the runtime: a blocking std listener.
pub fn bind_reuseport_std(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let context = || format!("binding {addr} (listen) with SO_REUSEPORT");
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).with_context(context)?;
    socket.set_reuse_address(true).with_context(context)?;
    #[cfg(unix)]
    socket.set_reuse_port(true).with_context(context)?;
    socket.bind(&addr.into()).with_context(context)?;
    socket.listen(BACKLOG).with_context(context)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_reads_the_two_variables() {
        assert!(!activation(None, None, 7).unwrap());
        assert!(!activation(Some(""), Some("7"), 7).unwrap());
        assert!(activation(Some("1"), None, 7).unwrap());
        assert!(activation(Some("2"), Some(""), 7).unwrap());
        assert!(activation(Some("1"), Some("7"), 7).unwrap());
        let cases = [
            (Some("x"), None, "LISTEN_FDS=\"x\" is not a number"),
            (Some("0"), None, "LISTEN_FDS=0"),
            (Some("1"), Some("8"), "LISTEN_PID=8 but this process is 7"),
            (Some("1"), Some("me"), "LISTEN_PID=\"me\" is not a pid"),
        ];
        for (fds, pid, want) in cases {
            let err = activation(fds, pid, 7).unwrap_err().to_string();
            assert!(err.contains(want), "{fds:?} {pid:?}: {err}");
        }
    }

    #[tokio::test]
    async fn two_listeners_share_a_port() {
        let first = bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind_reuseport(addr).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
        // A socket bound without SO_REUSEPORT is refused: the option is what shares the port.
        let err = std::net::TcpListener::bind(addr).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }

    #[tokio::test]
    async fn a_bind_error_names_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = format!("{:#}", bind_reuseport(addr).unwrap_err());
        assert!(err.contains(&format!("binding {addr} (listen)")), "{err}");
    }
}
