//! Restarts without losing a caller: the real `serve` binary, started twice on
//! one address (a socket passed as fd 3, or `SO_REUSEPORT`), under a steady
//! stream of requests, while the first instance is sent SIGTERM; and the
//! drain itself (a request in flight finishes; the deadline cuts a stuck one).
//!
//! Loopback only. Logs are read as JSON lines from each child's stderr; the
//! figures are printed (`cargo nextest run --test restart --no-capture`).

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ACCOUNT, TOKEN, settings_toml};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_call-router");
/// The longest any step may take before the test gives up.
const STEP: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// One `call-router serve` child and the JSON log lines it has written.
struct Instance {
    name: &'static str,
    child: Child,
    logs: Arc<Mutex<Vec<Value>>>,
}

/// How the child gets its socket.
enum Socket<'a> {
    /// The socket as fd 3, with `LISTEN_FDS=1` and `LISTEN_PID` set to the child.
    Passed(&'a socket2::Socket),
    /// `listen` from the config file (bound with `SO_REUSEPORT`).
    Bind,
}

impl Instance {
    fn start(name: &'static str, config: &std::path::Path, socket: Socket<'_>) -> Instance {
        let mut cmd = match socket {
            Socket::Passed(s) => {
                use std::os::fd::AsRawFd as _;
                // Duplicating the socket to fd 3 needs a shell: std has no safe
                // way to place an inherited fd. `$$` is the pid the exec keeps.
                let mut cmd = Command::new("bash");
                cmd.arg("-c")
                    .arg(
                        r#"exec 3<&"$SOCK_FD"; [ "$SOCK_FD" = 3 ] || eval "exec $SOCK_FD<&-";
                           export LISTEN_FDS=1 LISTEN_PID=$$; exec "$0" "$@""#,
                    )
                    .arg(BIN)
                    .env("SOCK_FD", s.as_raw_fd().to_string());
                cmd
            }
            Socket::Bind => Command::new(BIN),
        };
        cmd.args(["--json-logs", "serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,sqlx=warn,tower_http=warn")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning call-router serve");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                sink.lock().unwrap().push(value);
            }
        });
        let instance = Instance { name, child, logs };
        instance.wait_log("ready");
        instance
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first log line whose message starts with `message`, waiting for it.
    fn wait_log(&self, message: &str) -> Value {
        let until = Instant::now() + STEP;
        loop {
            if let Some(v) = self.find_log(message) {
                return v;
            }
            assert!(Instant::now() < until, "{}: no log line {message:?}; logs: {:#?}", self.name, self.logs());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn find_log(&self, message: &str) -> Option<Value> {
        self.logs.lock().unwrap().iter().find(|v| msg(v).starts_with(message)).cloned()
    }

    fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    fn sigterm(&self) {
        let ok = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap().success();
        assert!(ok, "kill -TERM {}", self.pid());
    }

    /// Waits for the process to exit, at most `limit`.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= until {
                let _ = self.child.kill();
                panic!("{} did not exit within {limit:?}; logs: {:#?}", self.name, self.logs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A numeric field of the first log line with `message`.
    fn field(&self, message: &str, field: &str) -> u64 {
        let line = self.wait_log(message);
        line["fields"][field].as_u64().unwrap_or_else(|| panic!("{}: no {field} in {line}", self.name))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn msg(v: &Value) -> &str {
    v["fields"]["message"].as_str().unwrap_or_default()
}

/// A temp dir with a config for `listen`, whose public URL (what signatures
/// cover) is `http://{public}`: a SQLite file in it, Twilio's base URLs at a
/// loopback port nothing listens on.
fn config(dir: &tempfile::TempDir, listen: SocketAddr, public: SocketAddr, extra: &str) -> std::path::PathBuf {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("router.db").display());
    let text = settings_toml(&format!("http://{public}"), &format!("http://{unused}"), &db, "");
    let text = format!("listen = \"{listen}\"\n{extra}\n{text}");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A listening socket on a free loopback port, inheritable (not close-on-exec).
fn passable_socket() -> socket2::Socket {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    s.listen(1024).unwrap();
    s.set_cloexec(false).unwrap();
    s
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

// ---------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------

/// Clients sending requests without pause until stopped: half keep their
/// connections alive, half open a new connection for every request. Every
/// other request is a signed `/incoming-call` to a number no location has
/// (a "not in service" answer, written to the database), the rest `/healthz`.
struct Load {
    ok: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        call_router::twilio_api::install_crypto_provider();
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let seq = Arc::new(AtomicU64::new(0));
        let tasks = (0..clients)
            .map(|i| {
                let builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
                let client =
                    if i.is_multiple_of(2) { builder } else { builder.pool_max_idle_per_host(0) }.build().unwrap();
                let (ok, errors, stop, seq) = (ok.clone(), errors.clone(), stop.clone(), seq.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let n = seq.fetch_add(1, Ordering::SeqCst);
                        match one_request(&client, addr, n).await {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => errors.lock().unwrap().push(format!("client {i} request {n}: {e}")),
                        }
                        // About 100 requests a second per client: a steady stream, not a flood.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        Load { ok, errors, stop, tasks }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    /// Waits until `more` requests beyond now have succeeded.
    async fn wait_for(&self, more: u64) {
        let target = self.ok() + more;
        tokio::time::timeout(STEP, async {
            while self.ok() < target {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{more} more requests did not succeed; errors: {:#?}", self.errors.lock().unwrap()))
    }

    async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        let errors = self.errors.lock().unwrap().clone();
        (self.ok.load(Ordering::SeqCst), errors)
    }
}

async fn one_request(client: &reqwest::Client, addr: SocketAddr, n: u64) -> Result<(), String> {
    if n.is_multiple_of(2) {
        let resp = client.get(format!("http://{addr}/healthz")).send().await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| format!("{e:?}"))?;
        return if status == 200 && body == "ok" { Ok(()) } else { Err(format!("/healthz: {status} {body:?}")) };
    }
    let url = format!("http://{addr}/incoming-call");
    let call_sid = format!("CA{n:032x}");
    let params = incoming(&call_sid);
    let sig = twilio::signature::sign(TOKEN.as_bytes(), &url, params.iter().map(|(k, v)| (*k, v.as_str())));
    let body: twilio::Params = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let resp = client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", sig)
        .body(body.encode())
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| format!("{e:?}"))?;
    if status == 200 && text.contains("not in service") {
        Ok(())
    } else {
        Err(format!("/incoming-call: {status} {text:?}"))
    }
}

fn incoming(call_sid: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AccountSid", ACCOUNT.to_owned()),
        ("CallSid", call_sid.to_owned()),
        ("From", "+14155550100".to_owned()),
        ("To", "+12025550199".to_owned()),
        ("CallStatus", "ringing".to_owned()),
        ("Direction", "inbound".to_owned()),
    ]
}

/// Runs a rolling restart under load: A serves, B starts, A gets SIGTERM and
/// must exit 0, B serves on. Returns (succeeded, errors, served by A, by B).
async fn rolling_restart(
    mut start: impl FnMut(&'static str) -> Instance,
    addr: SocketAddr,
) -> (u64, Vec<String>, u64, u64) {
    let mut a = tokio::task::block_in_place(|| start("A"));
    let load = Load::start(addr, 8);
    load.wait_for(100).await;
    let mut b = tokio::task::block_in_place(|| start("B"));
    load.wait_for(100).await;
    a.sigterm();
    let status = tokio::task::block_in_place(|| a.wait_exit(STEP));
    assert!(status.success(), "A exited with {status}; logs: {:#?}", a.logs());
    // B alone, for a while, on new connections and old ones.
    load.wait_for(200).await;
    let (ok, errors) = load.stop().await;
    b.sigterm();
    let status = tokio::task::block_in_place(|| b.wait_exit(STEP));
    assert!(status.success(), "B exited with {status}; logs: {:#?}", b.logs());
    let served_a = a.field("drained", "requests_served");
    let served_b = b.field("drained", "requests_served");
    (ok, errors, served_a, served_b)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// One socket passed to both instances: A's leftover connections stay in the
/// shared queue for B, so nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_with_a_passed_socket_loses_nothing() {
    let socket = passable_socket();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // `listen` differs from the socket's address: the passed socket must win.
    let path = config(&dir, free_port(), addr, "drain_secs = 10");
    let (ok, errors, served_a, served_b) =
        rolling_restart(|name| Instance::start(name, &path, Socket::Passed(&socket)), addr).await;
    println!(
        "passed socket: {ok} requests succeeded, {} failed; A served {served_a}, B served {served_b}",
        errors.len()
    );
    assert!(errors.is_empty(), "failed requests: {errors:#?}");
    assert!(served_a > 0 && served_b > 0, "A served {served_a}, B {served_b}");
    assert!(served_a + served_b >= ok, "the two instances served {served_a} + {served_b} < {ok} answered");
}

/// Two instances bind the same port with SO_REUSEPORT. Each has its own
/// accept queue; what was waiting in A's when it closed is reset by the
/// kernel (unless `net.ipv4.tcp_migrate_req = 1`). What is guaranteed: A
/// exits 0 after draining, B answers after A is gone, both served some.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_with_reuseport_keeps_serving() {
    let addr = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = config(&dir, addr, addr, "drain_secs = 10");
    let (ok, errors, served_a, served_b) =
        rolling_restart(|name| Instance::start(name, &path, Socket::Bind), addr).await;
    println!(
        "SO_REUSEPORT (tcp_migrate_req = {}): {ok} requests succeeded, {} failed; A served {served_a}, B served \
         {served_b}",
        migrate_req(),
        errors.len()
    );
    for e in &errors {
        println!("  {e}");
    }
    assert!(served_a > 0 && served_b > 0, "A served {served_a}, B {served_b}");
    assert!(served_a + served_b >= ok);
}

/// A request in flight when SIGTERM arrives is answered; new connections are
/// refused from then on; the process exits 0 well within the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_request_in_flight_and_refuses_new_ones() {
    let addr = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = config(&dir, addr, addr, "drain_secs = 20");
    let mut a = Instance::start("A", &path, Socket::Bind);

    let mut held = HeldRequest::open(addr, "CA0000000000000000000000000000000a");
    a.sigterm();
    let draining = a.wait_log("draining");
    assert_eq!(draining["fields"]["requests_in_flight"], 1, "{draining}");
    // The listener is closed at once: a new connection is refused while the held request is still open.
    let until = Instant::now() + STEP;
    while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
        assert!(Instant::now() < until, "still accepting connections after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(a.child.try_wait().unwrap().is_none(), "exited with a request in flight");

    let started = Instant::now();
    let answer = held.finish();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("not in service"), "{answer}");
    let status = a.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?} after the answer", started.elapsed());
    assert!(a.find_log("drain deadline passed").is_none(), "{:#?}", a.logs());
    assert_eq!(a.field("drained", "requests_served"), 1);
}

/// `systemctl reload` (SIGHUP): the running process loads the config file's
/// `[[locations]]` into its database and answers the next call by them; a
/// file that does not load changes nothing, and the process serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_loads_the_config_files_locations_without_a_restart() {
    let addr = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = config(&dir, addr, addr, "");
    let base = std::fs::read_to_string(&path).unwrap();
    let north = |lines: u32| {
        format!(
            "{base}\n[[locations]]\nname = \"north\"\nnumbers = [\"+12025550199\"]\nphone = \"+14155550123\"\n\
             lines = {lines}\nhours = {{ time_zone = \"UTC\", weekly = {{ mon = [\"00:00-24:00\"], tue = [\"00:00-24:00\"], \
             wed = [\"00:00-24:00\"], thu = [\"00:00-24:00\"], fri = [\"00:00-24:00\"], sat = [\"00:00-24:00\"], \
             sun = [\"00:00-24:00\"] }} }}\n"
        )
    };
    std::fs::write(&path, north(1)).unwrap();
    let mut a = Instance::start("A", &path, Socket::Bind);
    call_router::twilio_api::install_crypto_provider();
    let client = reqwest::Client::new();
    // `serve` does not import the file's locations at start: the number has none yet.
    one_request(&client, addr, 1).await.unwrap();

    let hup = |a: &Instance| {
        let ok = Command::new("kill").args(["-HUP", &a.pid().to_string()]).status().unwrap().success();
        assert!(ok, "kill -HUP {}", a.pid());
    };
    hup(&a);
    a.wait_log("SIGHUP: the config file's locations are in the database");
    // North now (its voicemail: nothing is provisioned in this test).
    let answer = call(&client, addr, 3).await;
    assert!(answer.contains("location=north") && !answer.contains("not in service"), "{answer}");

    // Too many lines: refused, logged, and north stays as it was.
    std::fs::write(&path, north(501)).unwrap();
    hup(&a);
    let refused = a.wait_log("SIGHUP: the config file was not loaded");
    assert!(refused["fields"]["error"].as_str().unwrap().contains("lines: 501"), "{refused}");
    assert!(call(&client, addr, 5).await.contains("location=north"));
    assert!(a.child.try_wait().unwrap().is_none(), "SIGHUP ended the process");
    a.sigterm();
    assert!(a.wait_exit(Duration::from_secs(20)).success());
}

/// A signed `/incoming-call` to +12025550199; the TwiML answered.
async fn call(client: &reqwest::Client, addr: SocketAddr, n: u64) -> String {
    let url = format!("http://{addr}/incoming-call");
    let call_sid = format!("CA{n:032x}");
    let params = incoming(&call_sid);
    let sig = twilio::signature::sign(TOKEN.as_bytes(), &url, params.iter().map(|(k, v)| (*k, v.as_str())));
    let body: twilio::Params = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let resp = client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", sig)
        .body(body.encode())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// A request that never finishes is cut at `drain_secs`, and the cut logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_deadline_cuts_a_stuck_request() {
    let addr = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = config(&dir, addr, addr, "drain_secs = 1");
    let mut a = Instance::start("A", &path, Socket::Bind);
    let _held = HeldRequest::open(addr, "CA0000000000000000000000000000000b");
    let sent = Instant::now();
    a.sigterm();
    let status = a.wait_exit(Duration::from_secs(8));
    let took = sent.elapsed();
    assert!(status.success(), "{status}");
    // Under the router's own 10 s request timeout, so the deadline is what ended it.
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(8), "exited after {took:?}");
    let cut = a.wait_log("drain deadline passed");
    assert_eq!(cut["fields"]["requests_cut"], 1, "{cut}");
    assert!(a.find_log("drained").is_none());
}

/// Linux's own behaviour, measured: two SO_REUSEPORT listeners on one port;
/// connections waiting in the first one's queue when it closes are reset,
/// unless `net.ipv4.tcp_migrate_req` is 1, which moves them to the other.
#[test]
fn a_closing_reuseport_listener_resets_its_queue() {
    let first = call_router::listen::bind_reuseport_std("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = first.local_addr().unwrap();
    let second = call_router::listen::bind_reuseport_std(addr).unwrap();
    second.set_nonblocking(true).unwrap();
    // Nobody accepts yet: the kernel finishes each handshake into one of the two queues.
    let clients: Vec<TcpStream> = (0..32)
        .map(|_| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"x").unwrap();
            c
        })
        .collect();
    let (_kept, in_second) = accept_all(&second);
    let waiting_in_first: Vec<&TcpStream> =
        clients.iter().filter(|c| !in_second.contains(&c.local_addr().unwrap())).collect();
    assert!(!waiting_in_first.is_empty(), "the kernel put all 32 connections in the second queue");
    drop(first);
    let (_kept_too, moved) = accept_all(&second);
    let mut reset = 0;
    for c in &waiting_in_first {
        c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 1];
        match (&**c).read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => reset += 1,
            Ok(0) => reset += 1,
            _ => {}
        }
    }
    let migrate = migrate_req();
    println!(
        "reuseport: {} of 32 waited in the closing listener's queue: {reset} reset, {} moved to the other \
         (tcp_migrate_req = {migrate})",
        waiting_in_first.len(),
        moved.len()
    );
    if migrate == "1" {
        assert_eq!((reset, moved.len()), (0, waiting_in_first.len()));
    } else {
        assert_eq!((reset, moved.len()), (waiting_in_first.len(), 0));
    }
}

/// Accepts every connection waiting; keeps them open (a dropped one with
/// unread data would itself be reset), returning their peers' addresses.
fn accept_all(l: &std::net::TcpListener) -> (Vec<TcpStream>, Vec<SocketAddr>) {
    let (mut streams, mut peers) = (Vec::new(), Vec::new());
    while let Ok((stream, peer)) = l.accept() {
        streams.push(stream);
        peers.push(peer);
    }
    (streams, peers)
}

fn migrate_req() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req")
        .map(|s| s.trim().to_owned())
        .unwrap_or("absent".into())
}

/// A signed `/incoming-call` sent by hand: headers with `Expect:
/// 100-continue`, then the body only when asked to finish. The server's
/// `100 Continue` shows the handler has started, so the request is in flight.
struct HeldRequest {
    stream: TcpStream,
    body: String,
}

impl HeldRequest {
    fn open(addr: SocketAddr, call_sid: &str) -> HeldRequest {
        let url = format!("http://{addr}/incoming-call");
        let params = incoming(call_sid);
        let sig = twilio::signature::sign(TOKEN.as_bytes(), &url, params.iter().map(|(k, v)| (*k, v.as_str())));
        let body = params.iter().map(|(k, v)| (*k, v.as_str())).collect::<twilio::Params>().encode();
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(STEP)).unwrap();
        write!(
            stream,
            "POST /incoming-call HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             X-Twilio-Signature: {sig}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .unwrap();
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).unwrap(), 1, "the server closed before 100 Continue");
            got.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&got);
        assert!(head.starts_with("HTTP/1.1 100"), "{head}");
        HeldRequest { stream, body }
    }

    /// Sends the body and reads the whole answer (the server closes after it).
    fn finish(&mut self) -> String {
        self.stream.write_all(self.body.as_bytes()).unwrap();
        let mut answer = String::new();
        self.stream.read_to_string(&mut answer).unwrap();
        answer
    }
}
