//! SSH into a real VM: `berth shell`, `berth ssh-config` with the system's
//! OpenSSH client, and an interactive pty through util-linux `script`.
#![cfg(feature = "vm")]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use berth_e2e::{Harness, berth_bin, text};

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Runs `berth args` with `input` on stdin.
fn berth_with_stdin(h: &Harness, args: &[&str], input: &[u8]) -> Output {
    let mut child = h
        .berth_cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn berth_shell_and_openssh_run_commands_in_the_vm_until_it_stops() {
    let h = Harness::new();
    h.berth_ok(&["start"]);
    let dir = h.instance_dir("default");
    for key in ["ssh_key", "ssh_host_key"] {
        let mode = std::fs::metadata(dir.join(key)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600,
            "{key}"
        );
    }

    // The remote exit code is berth's.
    let out = h.berth(&["shell", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));

    // stdin reaches the command; stdout and stderr stay apart.
    let out = berth_with_stdin(&h, &["shell", "--", "cat"], b"hi\n");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(text(&out.stdout), "hi\n");
    let out = h.berth(&["shell", "--", "sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(text(&out.stdout), "out\n", "{}", describe(&out));
    assert_eq!(text(&out.stderr), "err\n", "{}", describe(&out));

    // Arguments arrive as given, spaces and quotes included.
    let out = h.berth(&["shell", "--", "printf", "[%s]", "a b", "it's"]);
    assert_eq!(text(&out.stdout), "[a b][it's]", "{}", describe(&out));

    // OpenSSH through the generated config, from outside berth's environment
    // (the config names BERTH_HOME itself).
    let config = text(&h.berth_ok(&["ssh-config", "default"]).stdout);
    assert!(config.contains("Host berth-default"), "{config}");
    let config_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config_file.path(), &config).unwrap();
    let out = Command::new("ssh")
        .args(["-F"])
        .arg(config_file.path())
        .args(["berth-default", "uname", "-a"])
        .env_remove("BERTH_HOME")
        .stdin(Stdio::null())
        .output()
        .expect("running ssh (is openssh-client installed?)");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stdout).starts_with("Linux "),
        "{}",
        describe(&out)
    );
    // The instance's own copy of the config works the same.
    let out = Command::new("ssh")
        .arg("-F")
        .arg(dir.join("ssh_config"))
        .args(["berth-default", "cat", "/proc/1/comm"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(text(&out.stdout), "init\n", "{}", describe(&out));

    // An interactive login shell on a pty of the caller's terminal size.
    // `script` gives berth a terminal; the size is set on it first.
    let command = format!(
        "stty cols 123 rows 45; exec {} shell",
        berth_bin().display()
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("BERTH_HOME", h.home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running script (util-linux)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo TTY=$(tty); echo SIZE=$(stty size); exit 5\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    assert!(stdout.contains("TTY=/dev/pts/"), "{}", describe(&out));
    assert!(stdout.contains("SIZE=45 123"), "{}", describe(&out));

    // A listener started through `berth shell` is forwarded to the host
    // at the same port (sock_diag, on the process events its start causes).
    let port = berth_e2e::free_port();
    let mut listener = h
        .berth_cmd(&[
            "shell",
            "--",
            "sh",
            "-c",
            &format!("echo hello-from-the-vm | nc -l -p {port}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut greeting = None;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Read;
            conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
                .unwrap();
            let mut text = String::new();
            let _ = conn.read_to_string(&mut text);
            greeting = Some(text);
            break;
        }
    }
    let greeting = greeting.expect("the VM listener appears on the host port");
    assert!(greeting.contains("hello-from-the-vm"), "{greeting:?}");
    let _ = listener.kill();
    let _ = listener.wait();

    h.berth_ok(&["stop"]);
    let out = h.berth(&["shell", "--", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("instance default is not running"),
        "{}",
        describe(&out)
    );
}
