//! Operations around the server: what `call-router sandbox` prints for a shell,
//! and `call-router check`, against the sandbox over HTTP.

use std::io::BufRead as _;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_call-router");

/// The variables a test must not inherit from the shell that runs it.
const ENV: [&str; 9] = [
    "CALL_ROUTER_CONFIG",
    "CALL_ROUTER_PUBLIC_URL",
    "CALL_ROUTER_DATABASE_URL",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "CALL_ROUTER_TWILIO_API_BASE_URL",
    "CALL_ROUTER_TASKROUTER_BASE_URL",
    "CALL_ROUTER_WORKSPACE_SID",
    "CALL_ROUTER_WORKFLOW_SID",
];

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for var in ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `script` in bash and prints the named variables, one per line.
fn bash_vars(script: &str, names: &[&str]) -> Vec<String> {
    let print: String = names.iter().map(|n| format!("printf '%s\\n' \"${n}\"; ")).collect();
    let out = Command::new("bash").arg("-c").arg(format!("set -eu; {script}; {print}")).output().unwrap();
    assert!(out.status.success(), "bash: {}\n{script}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn sandbox_prints_lines_a_shell_can_eval_and_writes_them_to_the_env_file() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("sandbox.env");
    let mut child = Child(
        command(&["sandbox", "--listen", "127.0.0.1:0", "--number", "+12025550143", "--env-file"])
            .arg(&env_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    // The block ends with the `# inspect` line; the sandbox then runs until stopped.
    let printed = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            text.push_str(&line);
            text.push('\n');
            if line.starts_with("# inspect") {
                break;
            }
        }
        text
    })
    .await
    .unwrap();
    let names = [
        "CALL_ROUTER_TWILIO_API_BASE_URL",
        "CALL_ROUTER_TASKROUTER_BASE_URL",
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
    ];
    let quoted = printed.replace('\'', "'\\''");
    let from_eval = bash_vars(&format!("eval '{quoted}'"), &names);
    assert_eq!(from_eval.len(), 4, "{printed}");
    let from_file = bash_vars(&format!(". '{}'", env_file.display()), &names);
    assert_eq!(from_eval, from_file);
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), printed);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&env_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the env file is readable by others: {mode:o}");
    }

    // The variables reach the sandbox that printed them.
    let [base, taskrouter, sid, token] = <[String; 4]>::try_from(from_eval).unwrap();
    assert_eq!(base, taskrouter);
    assert!(base.starts_with("http://127.0.0.1:") && !base.ends_with(":0"), "{base}");
    call_router::twilio_api::install_crypto_provider();
    let http = reqwest::Client::new();
    let numbers: serde_json::Value = http
        .get(format!("{base}/2010-04-01/Accounts/{sid}/IncomingPhoneNumbers.json"))
        .basic_auth(&sid, Some(&token))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(numbers["incoming_phone_numbers"][0]["phone_number"], "+12025550143", "{numbers}");

    // Stopped, it removes the file, whose port and token no longer work.
    let term = Command::new("kill").arg("-TERM").arg(child.0.id().to_string()).status().unwrap();
    assert!(term.success());
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!env_file.exists(), "the env file outlived the sandbox");
}

/// A child process, killed when dropped (so a failing test leaves none behind).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
