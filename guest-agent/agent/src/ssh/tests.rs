//! The SSH server against russh's client over a socketpair; the processes
//! are this machine's `/bin/sh`, `cat`, `stty` and `sleep`.

use std::sync::Arc;

use russh::client;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Sig};
use tokio::net::UnixStream;

use super::*;

/// Fixture keys made with `ssh-keygen -t ed25519` for these tests only.
const HOST_KEY: &str = include_str!("testdata/host_key");
const USER_KEY: &str = include_str!("testdata/user_key");
const USER_PUB: &str = include_str!("testdata/user_key.pub");
const OTHER_KEY: &str = include_str!("testdata/other_key");

/// Trusts exactly the fixture host key.
struct Client;

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let host = PrivateKey::from_openssh(HOST_KEY).unwrap();
        Ok(
            matches!(key, PublicKeyOrCertificate::PublicKey { key, .. } if key.key_data() == host.public_key().key_data()),
        )
    }
}

async fn connect(user_key: &str) -> (client::Handle<Client>, bool) {
    let (server_end, client_end) = UnixStream::pair().unwrap();
    let slot = KeySlot::new();
    slot.set(Keys::parse(HOST_KEY, USER_PUB).unwrap());
    tokio::spawn(serve_connection(slot, server_end));
    let mut handle =
        client::connect_stream(Arc::new(client::Config::default()), client_end, Client)
            .await
            .unwrap();
    let key =
        PrivateKeyWithHashAlg::new(Arc::new(PrivateKey::from_openssh(user_key).unwrap()), None);
    let auth = handle.authenticate_publickey("root", key).await.unwrap();
    (handle, auth.success())
}

#[derive(Debug, Default)]
struct Outcome {
    stdout: String,
    stderr: String,
    exit_status: Option<u32>,
    exit_signal: Option<String>,
}

async fn finish(channel: &mut russh::Channel<client::Msg>) -> Outcome {
    let mut outcome = Outcome::default();
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => outcome.stdout.push_str(&String::from_utf8_lossy(&data)),
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                outcome.stderr.push_str(&String::from_utf8_lossy(&data));
            }
            ChannelMsg::ExitStatus { exit_status } => outcome.exit_status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                outcome.exit_signal = Some(format!("{signal_name:?}"));
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    outcome
}

#[tokio::test]
async fn exec_reports_exit_status_stdout_and_stderr() {
    let (handle, authenticated) = connect(USER_KEY).await;
    assert!(authenticated);
    let mut channel = handle.channel_open_session().await.unwrap();

    channel
        .exec(true, "echo out; echo err >&2; exit 7")
        .await
        .unwrap();
    let outcome = finish(&mut channel).await;

    assert_eq!(outcome.stdout, "out\n");
    assert_eq!(outcome.stderr, "err\n");
    assert_eq!(outcome.exit_status, Some(7));
}

#[tokio::test]
async fn exec_gets_stdin_until_eof_and_env_requests() {
    let (handle, _) = connect(USER_KEY).await;
    let mut channel = handle.channel_open_session().await.unwrap();

    channel.set_env(true, "GREETING", "hello").await.unwrap();
    channel.exec(true, "echo \"$GREETING\"; cat").await.unwrap();
    channel.data_bytes(&b"from stdin\n"[..]).await.unwrap();
    channel.eof().await.unwrap();
    let outcome = finish(&mut channel).await;

    assert_eq!(outcome.stdout, "hello\nfrom stdin\n");
    assert_eq!(outcome.exit_status, Some(0));
}

#[tokio::test]
async fn pty_exec_runs_on_a_terminal_of_the_requested_size() {
    let (handle, _) = connect(USER_KEY).await;
    let mut channel = handle.channel_open_session().await.unwrap();

    channel
        .request_pty(true, "xterm", 80, 24, 0, 0, &[])
        .await
        .unwrap();
    channel.window_change(132, 43, 0, 0).await.unwrap();
    channel
        .exec(true, "tty; stty size; echo TERM=$TERM")
        .await
        .unwrap();
    let outcome = finish(&mut channel).await;

    let lines: Vec<&str> = outcome.stdout.lines().map(str::trim_end).collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{:?}", outcome.stdout);
    assert_eq!(lines[1..], ["43 132", "TERM=xterm"], "{:?}", outcome.stdout);
    assert_eq!(outcome.exit_status, Some(0));
}

#[tokio::test]
async fn pty_shell_follows_window_changes_and_exits_with_the_shell() {
    let (handle, _) = connect(USER_KEY).await;
    let mut channel = handle.channel_open_session().await.unwrap();
    channel
        .request_pty(true, "xterm", 80, 24, 0, 0, &[])
        .await
        .unwrap();
    channel.request_shell(true).await.unwrap();

    channel.window_change(100, 30, 0, 0).await.unwrap();
    channel
        .data_bytes(&b"stty size; exit 3\n"[..])
        .await
        .unwrap();
    let outcome = finish(&mut channel).await;

    assert!(outcome.stdout.contains("30 100"), "{:?}", outcome.stdout);
    assert_eq!(outcome.exit_status, Some(3));
}

#[tokio::test]
async fn signal_request_reaches_the_process_and_comes_back_as_exit_signal() {
    let (handle, _) = connect(USER_KEY).await;
    let mut channel = handle.channel_open_session().await.unwrap();
    channel
        .exec(true, "echo started; exec sleep 30")
        .await
        .unwrap();
    let Some(ChannelMsg::Success) = channel.wait().await else {
        panic!("exec was not accepted");
    };
    let Some(ChannelMsg::Data { .. }) = channel.wait().await else {
        panic!("the command did not start");
    };

    channel.signal(Sig::TERM).await.unwrap();
    let outcome = finish(&mut channel).await;

    assert_eq!(outcome.exit_signal.as_deref(), Some("TERM"));
    assert_eq!(outcome.exit_status, None);
}

#[tokio::test]
async fn a_key_other_than_the_authorized_one_is_rejected() {
    let (_handle, authenticated) = connect(OTHER_KEY).await;

    assert!(!authenticated);
}

#[test]
fn keys_parse_errors_name_the_bad_authorized_key() {
    let err = Keys::parse(HOST_KEY, "ssh-ed25519 not-base64").unwrap_err();

    assert!(format!("{err:#}").contains("not-base64"), "{err:#}");
}
